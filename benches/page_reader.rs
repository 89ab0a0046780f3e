//! Play-count reads of the saved real video page (about 500 KB): pages per second and MB/s.
//!
//! `cargo bench --bench page_reader`. The page is read in place from `../shared`; without it
//! the benchmark says so and measures nothing.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use playpanel::tiktok::page::{PageReading, read_page};

fn page_reader(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/tiktok/universal_video_2025-12.html");
    let Ok(page) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} is not present", path.display());
        return;
    };
    assert_eq!(read_page(&page), PageReading::Count(192_100));

    let mut group = c.benchmark_group("page_reader");
    group.throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function("saved_real_page", |b| {
        b.iter(|| read_page(black_box(&page)))
    });
    group.finish();
}

criterion_group!(benches, page_reader);
criterion_main!(benches);
