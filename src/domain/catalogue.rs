//! The services a panel sells and how each maps to a provider's service.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;

/// One service as clients see it in `services`, plus the provider's service that delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub id: u32,
    pub name: String,
    pub category: String,
    /// Price per 1000 views.
    pub rate: Decimal,
    pub min: u64,
    pub max: u64,
    /// The service id to order at the upstream panel.
    pub upstream_service: u64,
    /// Whether clients may cancel its orders (the provider must support cancel).
    pub cancel: bool,
    /// Whether ended orders may be refilled when their views drop.
    pub refill: bool,
    /// Whether orders may be split into runs delivered some minutes apart.
    pub dripfeed: bool,
}

/// The services on sale, by id.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    services: BTreeMap<u32, Service>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogueFile {
    service: Vec<ServiceEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceEntry {
    id: u32,
    name: String,
    #[serde(default = "default_category")]
    category: String,
    rate: String,
    min: u64,
    max: u64,
    upstream_service: u64,
    #[serde(default)]
    cancel: bool,
    #[serde(default)]
    refill: bool,
    #[serde(default)]
    dripfeed: bool,
}

fn default_category() -> String {
    "TikTok Views".to_string()
}

impl Catalogue {
    /// Builds a catalogue, checking that ids are unique, rates non-negative and `min <= max`.
    pub fn new(services: Vec<Service>) -> Result<Catalogue, String> {
        let mut map = BTreeMap::new();
        for service in services {
            if service.rate.is_sign_negative() {
                return Err(format!("service {}: the rate is negative", service.id));
            }
            if service.min == 0 || service.min > service.max {
                return Err(format!(
                    "service {}: min must be at least 1 and at most max",
                    service.id
                ));
            }
            let id = service.id;
            if map.insert(id, service).is_some() {
                return Err(format!("service {id} is listed twice"));
            }
        }
        if map.is_empty() {
            return Err("the catalogue lists no service".to_string());
        }
        Ok(Catalogue { services: map })
    }

    /// Reads a TOML file of `[[service]]` tables.
    pub fn from_toml_file(path: &Path) -> Result<Catalogue, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read catalogue {}: {e}", path.display()))?;
        Catalogue::from_toml(&text).map_err(|e| format!("catalogue {}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Catalogue, String> {
        let file: CatalogueFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let services = file
            .service
            .into_iter()
            .map(|e| {
                let rate = Decimal::from_str(e.rate.trim())
                    .map_err(|_| format!("service {}: rate {:?} is not a number", e.id, e.rate))?;
                Ok(Service {
                    id: e.id,
                    name: e.name,
                    category: e.category,
                    rate,
                    min: e.min,
                    max: e.max,
                    upstream_service: e.upstream_service,
                    cancel: e.cancel,
                    refill: e.refill,
                    dripfeed: e.dripfeed,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Catalogue::new(services)
    }

    /// The two services the sandbox's upstream panel offers: one that delivers in full and one
    /// that delivers only part of what it reports as done.
    pub fn sandbox_default() -> Catalogue {
        let service = |id: u32, name: &str, rate: &str| Service {
            id,
            name: name.to_string(),
            category: default_category(),
            rate: Decimal::from_str(rate).unwrap_or_default(),
            min: 100,
            max: 1_000_000,
            upstream_service: u64::from(id),
            cancel: true,
            refill: true,
            dripfeed: true,
        };
        Catalogue::new(vec![
            service(1, "TikTok Views [verified, full delivery]", "0.90"),
            service(2, "TikTok Views [verified, budget provider]", "0.50"),
        ])
        .unwrap_or_default()
    }

    pub fn get(&self, id: u32) -> Option<&Service> {
        self.services.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_toml_catalogue() {
        let c = Catalogue::from_toml(
            r#"
            [[service]]
            id = 7
            name = "Views"
            rate = "1.25"
            min = 50
            max = 5000
            upstream_service = 301
            "#,
        )
        .unwrap();
        let s = c.get(7).unwrap();
        assert_eq!(s.rate.to_string(), "1.25");
        assert_eq!(s.upstream_service, 301);
        assert_eq!(s.category, "TikTok Views");
    }

    #[test]
    fn rejects_bad_catalogues() {
        let bad = [
            "[[service]]\nid=1\nname='a'\nrate='x'\nmin=1\nmax=2\nupstream_service=1",
            "[[service]]\nid=1\nname='a'\nrate='1'\nmin=5\nmax=2\nupstream_service=1",
            "[[service]]\nid=1\nname='a'\nrate='-1'\nmin=1\nmax=2\nupstream_service=1",
            "[[service]]\nid=1\nname='a'\nrate='1'\nmin=1\nmax=2\nupstream_service=1\n\
             [[service]]\nid=1\nname='b'\nrate='1'\nmin=1\nmax=2\nupstream_service=1",
            "service = []",
        ];
        for text in bad {
            assert!(Catalogue::from_toml(text).is_err(), "{text}");
        }
        assert_eq!(Catalogue::sandbox_default().iter().count(), 2);
    }
}
