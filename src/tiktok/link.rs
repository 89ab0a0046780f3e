//! stub
use std::fmt;
use std::str::FromStr;
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VideoId(u64);
impl VideoId {
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn new(v: u64) -> Option<VideoId> {
        (v > 0).then_some(VideoId(v))
    }
}
impl fmt::Display for VideoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl FromStr for VideoId {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Self, LinkError> {
        s.parse::<u64>()
            .ok()
            .and_then(VideoId::new)
            .ok_or(LinkError::NotAVideo)
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Video(VideoId),
    Short(ShortLink),
}
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShortLink {
    host: ShortHost,
    code: String,
}
impl ShortLink {
    pub fn host(&self) -> ShortHost {
        self.host
    }
    pub fn code(&self) -> &str {
        &self.code
    }
    pub fn path(&self) -> String {
        match self.host {
            ShortHost::Www => format!("/t/{}/", self.code),
            _ => format!("/{}/", self.code),
        }
    }
}
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShortHost {
    Vm,
    Vt,
    Www,
}
impl ShortHost {
    pub fn host_name(self) -> &'static str {
        match self {
            ShortHost::Vm => "vm.tiktok.com",
            ShortHost::Vt => "vt.tiktok.com",
            ShortHost::Www => "www.tiktok.com",
        }
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    Empty,
    TooLong,
    NotALink,
    NotTikTok,
    NotAVideo,
}
pub fn parse_link(input: &str) -> Result<Link, LinkError> {
    let i = input.trim();
    if let Some(p) = i.rfind("/video/") {
        return i[p + 7..]
            .split(['?', '/'])
            .next()
            .unwrap_or("")
            .parse()
            .map(Link::Video);
    }
    if let Some(c) = i.strip_prefix("https://vm.tiktok.com/") {
        return Ok(Link::Short(ShortLink {
            host: ShortHost::Vm,
            code: c.trim_end_matches('/').to_string(),
        }));
    }
    Err(LinkError::NotAVideo)
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShortTarget {
    Video(VideoId),
    Gone,
    NotAVideo,
}
pub fn classify_redirect(location: &str) -> ShortTarget {
    match parse_link(location) {
        Ok(Link::Video(v)) => ShortTarget::Video(v),
        _ => {
            if location.trim_end_matches('/').ends_with("tiktok.com")
                || location.contains("tiktok.com/?")
            {
                ShortTarget::Gone
            } else {
                ShortTarget::NotAVideo
            }
        }
    }
}
pub fn canonical_url(id: VideoId) -> String {
    format!("https://www.tiktok.com/@/video/{id}")
}
