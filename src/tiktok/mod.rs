//! TikTok as playpanel sees it: pasted links, short-link resolution and the public play count
//! read from a video's page.
//!
//! Only TikTok's own hosts are ever contacted (or, in sandbox mode, the configured sandbox):
//! a link contributes a video id or a short code, never a host to connect to, and a redirect
//! is followed only when it names a TikTok host. Pages are fetched at a limited rate; nothing
//! here signs requests, solves challenges or hides where requests come from.

pub mod guard;
pub mod link;
pub mod page;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use moka::future::Cache;
use reqwest::StatusCode;
use reqwest::header::{LOCATION, USER_AGENT};
use url::Url;

use guard::{Breaker, PublicOnly, SystemResolver};
use link::{ShortLink, ShortTarget, VideoId};
use page::PageReading;

/// Hosts a fetch may go to: the web host for pages, the short-link hosts for redirects.
const WEB_HOST: &str = "www.tiktok.com";
const PAGE_HOSTS: [&str; 3] = ["www.tiktok.com", "tiktok.com", "m.tiktok.com"];

/// Counts above this are treated as unreadable (it also keeps every count storable).
const MAX_PLAUSIBLE_COUNT: u64 = 1 << 53;

/// What reading a video's page gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// The public play count.
    Count(u64),
    /// The post or its account is private.
    Private,
    /// Not available in the region the reader sees TikTok from.
    Region,
    /// TikTok says the post does not exist.
    Gone,
    /// TikTok did not show the page (challenge, captcha, login, refusal): try again later.
    Blocked(String),
    /// No usable answer (timeout, server error, connection failure): try again later.
    Unavailable(String),
}

impl Reading {
    /// The class of answer, as metrics label it.
    pub fn class(&self) -> &'static str {
        match self {
            Reading::Count(_) => "ok",
            Reading::Private => "private",
            Reading::Region => "region",
            Reading::Gone => "gone",
            Reading::Blocked(_) => "blocked",
            Reading::Unavailable(_) => "unavailable",
        }
    }

    /// Whether the same read may give a different answer later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Reading::Blocked(_) | Reading::Unavailable(_))
    }
}

/// Where a short link leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Video(VideoId),
    /// The redirect lands on the home page: the post was removed.
    Gone,
    /// The redirect names something that is not a single post.
    NotAVideo,
    /// The short host did not answer usefully; the link may resolve later.
    Failed(Reading),
}

/// How the reader reaches TikTok.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// Send every request to this base URL instead of TikTok's hosts (the sandbox).
    pub sandbox: Option<Url>,
    pub user_agent: String,
    /// Page and redirect requests per second to each host, across all videos.
    pub rate_per_second: u32,
    /// The first pause of all reads after TikTok refuses one (doubling while refusals go on,
    /// up to `breaker_max`); zero turns the breaker off.
    pub breaker_base: Duration,
    pub breaker_max: Duration,
    /// A post known to exist. TikTok answers "does not exist" (10204) both for removed posts
    /// and to networks it distrusts; the answer is believed only while this post reads fine.
    /// `None` believes every such answer.
    pub canary: Option<VideoId>,
    /// How long a play count read for one `add` may be reused by the next.
    pub count_ttl: Duration,
    pub timeout: Duration,
    pub max_page_bytes: usize,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        ReaderConfig {
            sandbox: None,
            user_agent: format!("playpanel/{} (play-count check)", env!("CARGO_PKG_VERSION")),
            rate_per_second: 5,
            breaker_base: Duration::from_secs(30),
            breaker_max: Duration::from_secs(15 * 60),
            // The post of the saved real page in the test fixtures.
            canary: VideoId::new(7_571_863_205_253_778_710),
            count_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(15),
            max_page_bytes: 4 << 20,
        }
    }
}

/// Reads play counts and resolves short links, sharing one fetch among concurrent readers of
/// the same video.
pub struct Reader {
    http: reqwest::Client,
    config: ReaderConfig,
    limiter: DefaultKeyedRateLimiter<String>,
    breaker: Breaker,
    counts: Cache<VideoId, Reading>,
    shorts: Cache<ShortLink, Resolved>,
    /// Whether the canary read fine lately; only `true` is kept.
    canary_ok: Cache<(), bool>,
}

impl Reader {
    pub fn new(config: ReaderConfig) -> anyhow::Result<Reader> {
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5).min(config.timeout))
            .timeout(config.timeout)
            .no_proxy();
        if config.sandbox.is_none() {
            // In production only public addresses of TikTok's hosts are ever connected to.
            http = http.dns_resolver(Arc::new(PublicOnly::new(Arc::new(SystemResolver))));
        }
        let rate = NonZeroU32::new(config.rate_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Ok(Reader {
            http: http.build()?,
            limiter: RateLimiter::keyed(Quota::per_second(rate)),
            breaker: Breaker::new(config.breaker_base, config.breaker_max),
            canary_ok: Cache::builder()
                .time_to_live(Duration::from_secs(300))
                .build(),
            counts: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.count_ttl)
                .build(),
            shorts: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            config,
        })
    }

    /// The play count, reusing one read within the configured time; concurrent calls for the
    /// same video share one fetch. Only counts are cached.
    pub async fn read(&self, video: VideoId) -> Reading {
        let result = self
            .counts
            .try_get_with(video, async {
                // Only counts are kept: a video made public again must not read as private.
                let reading = self.fetch_count(video).await;
                if matches!(reading, Reading::Count(_)) {
                    Ok(reading)
                } else {
                    Err(reading)
                }
            })
            .await;
        match result {
            Ok(reading) => reading,
            Err(failed) => Arc::unwrap_or_clone(failed),
        }
    }

    /// A new read of the play count, for verification, which must not see an older value.
    pub async fn read_fresh(&self, video: VideoId) -> Reading {
        let reading = self.fetch_count(video).await;
        if matches!(reading, Reading::Count(_)) {
            self.counts.insert(video, reading.clone()).await;
        }
        reading
    }

    /// Follows a short link's one redirect, without letting it lead anywhere but TikTok.
    pub async fn resolve(&self, short: &ShortLink) -> Resolved {
        if let Some(hit) = self.shorts.get(short).await {
            return hit;
        }
        let resolved = self.fetch_redirect(short).await;
        if !matches!(resolved, Resolved::Failed(_)) {
            self.shorts.insert(short.clone(), resolved.clone()).await;
        }
        resolved
    }

    async fn fetch_redirect(&self, short: &ShortLink) -> Resolved {
        let response = match self.get(short.host().host_name(), &short.path()).await {
            Ok(response) => response,
            Err(failed) => return Resolved::Failed(failed),
        };
        let status = response.status();
        if status.is_redirection() {
            let Some(location) = response.headers().get(LOCATION) else {
                return Resolved::Failed(Reading::Blocked("redirect without a target".into()));
            };
            let Ok(location) = location.to_str() else {
                return Resolved::NotAVideo;
            };
            return match link::classify_redirect(location) {
                ShortTarget::Video(id) => Resolved::Video(id),
                ShortTarget::Gone => Resolved::Gone,
                ShortTarget::NotAVideo => Resolved::NotAVideo,
            };
        }
        Resolved::Failed(classify_status(status).unwrap_or_else(|| {
            Reading::Blocked(format!("short link answered {status} without a redirect"))
        }))
    }

    async fn fetch_count(&self, video: VideoId) -> Reading {
        let reading = self.fetch_page(video).await;
        metrics::counter!("playpanel_page_reads_total", "class" => reading.class()).increment(1);
        match &reading {
            Reading::Blocked(_) => self.breaker.trip(),
            Reading::Unavailable(_) => {}
            _ => self.breaker.reset(),
        }
        reading
    }

    /// "Does not exist" is believed only while a post known to exist still reads fine.
    async fn confirm_gone(&self, video: VideoId) -> Reading {
        let Some(canary) = self.config.canary.filter(|c| *c != video) else {
            return Reading::Gone;
        };
        if self.canary_ok.get(&()).await.is_some() {
            return Reading::Gone;
        }
        match Box::pin(self.fetch_page(canary)).await {
            Reading::Count(_) => {
                self.canary_ok.insert((), true).await;
                Reading::Gone
            }
            _ => Reading::Blocked(
                "TikTok says no post exists, and the canary post is not \
                 readable either"
                    .into(),
            ),
        }
    }

    async fn fetch_page(&self, video: VideoId) -> Reading {
        let mut host = WEB_HOST.to_string();
        let mut path = format!("/@/video/{video}");

        // TikTok may move a page to its canonical address (the author's name in the path);
        // follow that a few times, but only within its own web hosts and the same post.
        for _ in 0..3 {
            let response = match self.get(&host, &path).await {
                Ok(response) => response,
                Err(failed) => return failed,
            };
            let status = response.status();
            if status.is_redirection() {
                match self.page_redirect(&response, video) {
                    Ok((next_host, next_path)) => {
                        host = next_host;
                        path = next_path;
                        continue;
                    }
                    Err(reading) => return reading,
                }
            }
            if let Some(reading) = classify_status(status) {
                return reading;
            }
            let body = match self.read_body(response).await {
                Ok(body) => body,
                Err(failed) => return failed,
            };
            return match page::read_page(&body) {
                // No real post has this many plays; the page is not what it seems.
                PageReading::Count(count) if count > MAX_PLAUSIBLE_COUNT => {
                    Reading::Blocked(format!("implausible play count {count}"))
                }
                PageReading::Count(count) => Reading::Count(count),
                PageReading::Private => Reading::Private,
                PageReading::Region => Reading::Region,
                PageReading::NotFound => self.confirm_gone(video).await,
                PageReading::Blocked(why) => Reading::Blocked(why.to_string()),
                PageReading::NoCount => Reading::Blocked("page data has no play count".into()),
                PageReading::OtherStatus(code) => {
                    Reading::Unavailable(format!("page status code {code}"))
                }
            };
        }
        Reading::Blocked("too many redirects".into())
    }

    fn page_redirect(
        &self,
        response: &reqwest::Response,
        video: VideoId,
    ) -> Result<(String, String), Reading> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let base = Url::parse(&format!("https://{WEB_HOST}/"))
            .map_err(|_| Reading::Blocked("bad redirect".into()))?;
        let target = base
            .join(location)
            .map_err(|_| Reading::Blocked("redirect to an unreadable address".into()))?;
        if target.path().contains("login") {
            return Err(Reading::Blocked("redirected to the login page".into()));
        }
        let host = target.host_str().unwrap_or_default().to_ascii_lowercase();
        let same_post = matches!(
            link::parse_link(target.as_str()),
            Ok(link::Link::Video(id)) if id == video
        );
        if !PAGE_HOSTS.contains(&host.as_str()) || !same_post {
            return Err(Reading::Blocked("redirected away from the post".into()));
        }
        let mut path = target.path().to_string();
        if let Some(query) = target.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok((host, path))
    }

    /// One rate-limited GET to a TikTok host (or the sandbox standing in for it), unless the
    /// breaker has paused reads.
    async fn get(&self, host: &str, path: &str) -> Result<reqwest::Response, Reading> {
        if let Some(pause) = self.breaker.paused_for() {
            return Err(Reading::Blocked(format!(
                "reads paused for {} s after TikTok refused them",
                pause.as_secs()
            )));
        }
        self.limiter.until_key_ready(&host.to_string()).await;
        let url = match &self.config.sandbox {
            Some(base) => format!("{}{}", base.as_str().trim_end_matches('/'), path),
            None => format!("https://{host}{path}"),
        };
        self.http
            .get(url)
            .header(USER_AGENT, &self.config.user_agent)
            .send()
            .await
            .map_err(|e| Reading::Unavailable(describe(&e)))
    }

    async fn read_body(&self, mut response: reqwest::Response) -> Result<String, Reading> {
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.config.max_page_bytes {
                        return Err(Reading::Unavailable("page larger than the limit".into()));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(Reading::Unavailable(describe(&e))),
            }
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// The statuses that decide a read before the body is looked at.
fn classify_status(status: StatusCode) -> Option<Reading> {
    match status.as_u16() {
        200..=299 | 404 => None,
        403 | 429 => Some(Reading::Blocked(format!("answered {status}"))),
        500..=599 => Some(Reading::Unavailable(format!("answered {status}"))),
        _ => Some(Reading::Blocked(format!("answered {status}"))),
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    }
}
