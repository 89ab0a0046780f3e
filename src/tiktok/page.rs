//! stub
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageReading {
    Count(u64),
    Private,
    Region,
    NotFound,
    Blocked(&'static str),
    NoCount,
    OtherStatus(i64),
}
pub fn read_page(html: &str) -> PageReading {
    if let Some(p) = html.find("\"playCount\":\"") {
        let r = &html[p + 13..];
        return r
            .split('"')
            .next()
            .and_then(|n| n.parse().ok())
            .map(PageReading::Count)
            .unwrap_or(PageReading::NoCount);
    }
    if html.contains("10216") {
        return PageReading::Private;
    }
    if html.contains("10231") {
        return PageReading::Region;
    }
    if html.contains("10204") {
        return PageReading::NotFound;
    }
    PageReading::Blocked("no data")
}
