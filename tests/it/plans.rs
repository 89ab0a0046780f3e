//! Query plans that must not depend on fresh statistics (PostgreSQL).

use playpanel::store::PostgresStore;
use sqlx::Connection;

use crate::support::{PgDatabase, postgres_admin_url};

/// A burst of new orders into a table of ended ones, before statistics catch up: the planner
/// believes almost no order is open. The claim's "is an earlier order on this video open?"
/// check once read every open order for every candidate then; it must stay on its index.
#[tokio::test]
async fn the_claim_stays_on_the_video_queue_index_after_a_burst() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let db = PgDatabase::create(&admin).await;
    let store = PostgresStore::open(&db.url).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let fill = |phase: &str, status: &str, from: i64, count: i64| {
        format!(
            "INSERT INTO orders (key_id, service_id, video_id, link, quantity, charge, status, \
             phase, start_count, remains, next_run_at, created_at, updated_at) \
             SELECT 1, 1, (g + {from})::text, 'x', 100, 9000, '{status}', '{phase}', 5, 0, \
             g, 0, 0 FROM generate_series(1, {count}) AS g"
        )
    };
    for sql in [
        "INSERT INTO api_keys (key_hash, balance, created_at) VALUES ('k', 0, 0)".to_string(),
        fill("done", "Completed", 0, 200_000),
        "ANALYZE orders".to_string(),
        fill("deliver", "In progress", 1_000_000, 5_000),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .unwrap();
    }

    let plan = store.explain_claim(32).await.unwrap();
    assert!(
        plan.contains("Index Scan using orders_video_queue on orders earlier"),
        "{plan}"
    );
}
