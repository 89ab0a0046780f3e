//! API keys: made from the operating system's random source, stored only as a hash.

use crate::api::hash_key;
use crate::domain::Money;
use crate::store::Store;

/// Makes a new key with an opening balance and returns it; only its hash is stored.
pub async fn create(store: &dyn Store, balance: Money) -> anyhow::Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    let key = hex::encode(bytes);
    store.create_key(&hash_key(&key), balance).await?;
    Ok(key)
}
