//! What keeps the page reader polite and contained: a name resolver that refuses non-public
//! addresses, and a breaker that pauses all reads after TikTok starts refusing them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether an address is on the public internet: not loopback, private, link-local, shared
/// (carrier-grade NAT), multicast, documentation, benchmarking or otherwise reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let first = v6.segments()[0];
            let nat64 = v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || (nat64 && !is_public_v4(nat64_embedded(v6))))
        }
    }
}

fn nat64_embedded(v6: Ipv6Addr) -> Ipv4Addr {
    let s = v6.segments();
    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8)
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(v4.is_private()
        || v4.is_loopback()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space
        || (a == 192 && b == 0 && c == 0) // protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240)
}

/// Looks names up with the system resolver.
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let addrs: Addrs = Box::new(found.collect::<Vec<_>>().into_iter());
            Ok(addrs)
        })
    }
}

/// Passes on only the public addresses another resolver finds, so that a name pointed at an
/// internal network (by DNS rebinding, a poisoned cache or a hosts file) is never connected to.
pub struct PublicOnly {
    inner: Arc<dyn Resolve>,
}

impl PublicOnly {
    pub fn new(inner: Arc<dyn Resolve>) -> PublicOnly {
        PublicOnly { inner }
    }
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.inner.resolve(name);
        Box::pin(async move {
            let public: Vec<SocketAddr> = lookup.await?.filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err("the name resolves to no public address".into());
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Pauses every read for a while after TikTok refuses one, doubling the pause while the
/// refusals go on, so a blocked reader backs off instead of hammering.
pub struct Breaker {
    base: Duration,
    max: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Default)]
struct BreakerState {
    pause: Duration,
    until: Option<Instant>,
}

impl Breaker {
    pub fn new(base: Duration, max: Duration) -> Breaker {
        Breaker {
            base,
            max,
            state: Mutex::new(BreakerState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long reads stay paused, if they are.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = self.state().until?;
        until
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    }

    /// A refusal: pause, longer each time in a row.
    pub fn trip(&self) {
        if self.base.is_zero() {
            return;
        }
        let mut state = self.state();
        state.pause = if state.pause.is_zero() {
            self.base
        } else {
            (state.pause * 2).min(self.max)
        };
        state.until = Some(Instant::now() + state.pause);
    }

    /// A page was read: back to full speed.
    pub fn reset(&self) {
        let mut state = self.state();
        state.pause = Duration::ZERO;
        state.until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        let private = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
        ];
        for ip in private {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        let public = [
            "8.8.8.8",
            "23.1.2.3",
            "172.32.0.1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
        ];
        for ip in public {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    struct Fixed(Vec<SocketAddr>);

    impl Resolve for Fixed {
        fn resolve(&self, _: Name) -> Resolving {
            let addrs = self.0.clone();
            Box::pin(async move {
                let addrs: Addrs = Box::new(addrs.into_iter());
                Ok(addrs)
            })
        }
    }

    #[tokio::test]
    async fn a_tiktok_name_pointed_inside_is_refused() {
        let name = || "www.tiktok.com".parse::<Name>().unwrap();
        let inside = Arc::new(Fixed(vec!["127.0.0.1:443".parse().unwrap()]));
        assert!(PublicOnly::new(inside).resolve(name()).await.is_err());

        let mixed = Arc::new(Fixed(vec![
            "10.0.0.5:443".parse().unwrap(),
            "23.1.2.3:443".parse().unwrap(),
        ]));
        let found: Vec<_> = PublicOnly::new(mixed)
            .resolve(name())
            .await
            .unwrap()
            .collect();
        assert_eq!(found, vec!["23.1.2.3:443".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn the_breaker_backs_off_and_recovers() {
        let breaker = Breaker::new(Duration::from_secs(30), Duration::from_secs(100));
        assert!(breaker.paused_for().is_none());
        breaker.trip();
        assert!(breaker.paused_for().unwrap() > Duration::from_secs(29));
        breaker.trip();
        assert!(breaker.paused_for().unwrap() > Duration::from_secs(59));
        breaker.trip();
        assert!(breaker.paused_for().unwrap() <= Duration::from_secs(100));
        breaker.reset();
        assert!(breaker.paused_for().is_none());

        let off = Breaker::new(Duration::ZERO, Duration::ZERO);
        off.trip();
        assert!(off.paused_for().is_none());
    }
}
