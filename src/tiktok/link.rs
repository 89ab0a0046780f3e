//! Turning a link a customer pasted into the TikTok post it points at.
//!
//! A parsed link carries only a numeric post id or a short code made of a few safe characters,
//! never the host or path text the customer typed. Whatever is fetched later is rebuilt from
//! those parts, so no pasted text can steer a request to another host or an unexpected path.

use std::fmt;
use std::str::FromStr;

use url::{Host, Url};

/// The longest pasted text, in bytes, that is looked at at all.
pub const MAX_LINK_LEN: usize = 2048;

/// The longest short-link code accepted; real codes are about a dozen characters.
const MAX_SHORT_CODE_LEN: usize = 64;

/// The id of one TikTok post (a video or a photo post): a positive 64-bit number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VideoId(u64);

impl VideoId {
    /// Wraps a raw id; `None` for zero, which TikTok never uses as a post id.
    pub fn new(id: u64) -> Option<VideoId> {
        (id != 0).then_some(VideoId(id))
    }

    /// The raw id.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for VideoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The text given to [`VideoId::from_str`] is not a positive decimal id that fits in 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseVideoIdError;

impl fmt::Display for ParseVideoIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a positive decimal video id")
    }
}

impl std::error::Error for ParseVideoIdError {}

impl FromStr for VideoId {
    type Err = ParseVideoIdError;

    /// Accepts ASCII decimal digits only: no sign, no spaces, not zero, at most `u64::MAX`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_id(s).ok_or(ParseVideoIdError)
    }
}

/// A pasted link, reduced to what is needed to find the post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A single post (video or photo post).
    Video(VideoId),
    /// A short link; the post is only known after following its one redirect.
    Short(ShortLink),
}

/// The host that serves a short link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShortHost {
    /// `vm.tiktok.com/CODE`
    Vm,
    /// `vt.tiktok.com/CODE`
    Vt,
    /// `www.tiktok.com/t/CODE`
    Www,
}

impl ShortHost {
    /// The host name to send the request for the redirect to.
    pub fn host_name(self) -> &'static str {
        match self {
            ShortHost::Vm => "vm.tiktok.com",
            ShortHost::Vt => "vt.tiktok.com",
            ShortHost::Www => "www.tiktok.com",
        }
    }
}

/// A short link: a host from a fixed list and a code of 1 to 64 characters from
/// `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ShortLink {
    host: ShortHost,
    code: String,
}

impl ShortLink {
    /// Builds a short link from its parts; `None` if the code has a character or length that
    /// short codes never have.
    pub fn new(host: ShortHost, code: &str) -> Option<ShortLink> {
        is_short_code(code).then(|| ShortLink {
            host,
            code: code.to_owned(),
        })
    }

    /// The host serving this short link.
    pub fn host(&self) -> ShortHost {
        self.host
    }

    /// The code, with its case kept: codes are case-sensitive.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The path to request on [`ShortHost::host_name`]: `/CODE/` on vm. and vt., `/t/CODE/` on
    /// www.
    pub fn path(&self) -> String {
        match self.host {
            ShortHost::Vm | ShortHost::Vt => format!("/{}/", self.code),
            ShortHost::Www => format!("/t/{}/", self.code),
        }
    }
}

/// Why a pasted text was not accepted as a link to a TikTok post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// Nothing but whitespace.
    Empty,
    /// Longer than [`MAX_LINK_LEN`] bytes.
    TooLong,
    /// No web link in the text (or one with a scheme other than http or https).
    NotALink,
    /// A web link, but not to one of TikTok's own hosts, or one carrying a user name, a password,
    /// a non-default port or an IP address.
    NotTikTok,
    /// A TikTok link, but to something other than a single post: a profile, a sound, a tag, a
    /// live room, the home page.
    NotAVideo,
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::Empty => f.write_str("the link is empty"),
            LinkError::TooLong => write!(f, "the link is longer than {MAX_LINK_LEN} bytes"),
            LinkError::NotALink => f.write_str("the text is not a web link"),
            LinkError::NotTikTok => f.write_str("the link does not point to TikTok"),
            LinkError::NotAVideo => f.write_str("the TikTok link does not point to a single post"),
        }
    }
}

impl std::error::Error for LinkError {}

/// What a short link's redirect target means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShortTarget {
    /// The short link leads to this post.
    Video(VideoId),
    /// The short link leads to TikTok's home page, which is where links to removed posts land.
    Gone,
    /// The short link leads somewhere that is not a single post.
    NotAVideo,
}

/// Reads a pasted text and finds the TikTok post link in it.
///
/// Surrounding whitespace is ignored, and so is text around the link: the first
/// whitespace-separated token that is a link to a TikTok host decides the result. A link without
/// a scheme is read as https.
pub fn parse_link(input: &str) -> Result<Link, LinkError> {
    // Measured before trimming so that an oversized paste costs nothing beyond its length.
    if input.len() > MAX_LINK_LEN {
        return Err(LinkError::TooLong);
    }

    let text = input.trim();
    if text.is_empty() {
        return Err(LinkError::Empty);
    }

    let mut error = LinkError::NotALink;
    for token in text.split_whitespace() {
        match locate(strip_punctuation(token), SchemeRule::MayBeMissing) {
            Located::TikTok(url, host) => return classify_path(&url, host),
            Located::OtherHost => error = LinkError::NotTikTok,
            Located::NotALink => {}
        }
    }
    Err(error)
}

/// Reads the `Location` header of a short link's redirect.
///
/// Only absolute http(s) URLs are understood; a relative or scheme-less location is treated as
/// [`ShortTarget::NotAVideo`], because TikTok's short hosts answer with absolute ones.
pub fn classify_redirect(location: &str) -> ShortTarget {
    if location.len() > MAX_LINK_LEN {
        return ShortTarget::NotAVideo;
    }

    let Located::TikTok(url, host) = locate(location.trim(), SchemeRule::Required) else {
        return ShortTarget::NotAVideo;
    };

    match classify_path(&url, host) {
        Ok(Link::Video(id)) => ShortTarget::Video(id),
        // A short link pointing at another short link is not something TikTok does; following
        // chains would also let a link bounce the fetcher around.
        Ok(Link::Short(_)) => ShortTarget::NotAVideo,
        Err(_) if host == HostKind::Web && url.path() == "/" => ShortTarget::Gone,
        Err(_) => ShortTarget::NotAVideo,
    }
}

/// The one URL form used to fetch a post's page or to hand the post to a provider.
///
/// The user name is left empty: TikTok serves the post under any name, and an id-only URL
/// cannot carry anything the customer typed.
pub fn canonical_url(id: VideoId) -> String {
    format!("https://www.tiktok.com/@/video/{id}")
}

/// The TikTok hosts, grouped by which path forms they serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostKind {
    /// tiktok.com, www.tiktok.com, m.tiktok.com: posts, and short links under `/t/`.
    Web,
    /// vm.tiktok.com: short links only.
    ShortVm,
    /// vt.tiktok.com: short links only.
    ShortVt,
    /// t.tiktok.com, tiktokv.com, www.tiktokv.com: post links only.
    Share,
}

fn host_kind(name: &str) -> Option<HostKind> {
    // A fully qualified name with its root dot is the same host.
    let name = name.strip_suffix('.').unwrap_or(name);
    const HOSTS: [(&str, HostKind); 8] = [
        ("tiktok.com", HostKind::Web),
        ("www.tiktok.com", HostKind::Web),
        ("m.tiktok.com", HostKind::Web),
        ("vm.tiktok.com", HostKind::ShortVm),
        ("vt.tiktok.com", HostKind::ShortVt),
        ("t.tiktok.com", HostKind::Share),
        ("tiktokv.com", HostKind::Share),
        ("www.tiktokv.com", HostKind::Share),
    ];
    HOSTS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|&(_, kind)| kind)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemeRule {
    /// People paste `www.tiktok.com/...` without a scheme.
    MayBeMissing,
    /// Redirect targets are absolute URLs.
    Required,
}

enum Located {
    TikTok(Url, HostKind),
    OtherHost,
    NotALink,
}

/// Parses one token as a URL and checks that it is a plain link to a TikTok host.
fn locate(token: &str, rule: SchemeRule) -> Located {
    let parsed = match scheme_of(token) {
        Some(scheme) if is_http(scheme) => Url::parse(token),
        Some(_) => return Located::NotALink,
        None if rule == SchemeRule::MayBeMissing && starts_with_domain(token) => {
            Url::parse(&format!("https://{token}"))
        }
        None => return Located::NotALink,
    };
    let Ok(url) = parsed else {
        return Located::NotALink;
    };
    if !is_http(url.scheme()) {
        return Located::NotALink;
    }

    // IP literals are refused even if they happen to belong to TikTok: only names on the list
    // are ever fetched.
    let Some(Host::Domain(name)) = url.host() else {
        return Located::OtherHost;
    };
    let Some(kind) = host_kind(name) else {
        return Located::OtherHost;
    };

    // The url crate drops default ports, so any port left is a non-default one. Credentials and
    // odd ports are never part of a link TikTok hands out; they only appear in crafted ones.
    if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
        return Located::OtherHost;
    }
    Located::TikTok(url, kind)
}

fn is_http(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

/// The scheme at the start of `token`, if it has one.
///
/// Dots are left out of the scheme characters on purpose, so that `tiktok.com:443/...` reads as
/// a host and port rather than as a URL with the scheme `tiktok.com`.
fn scheme_of(token: &str) -> Option<&str> {
    let (head, _) = token.split_once(':')?;
    let mut bytes = head.bytes();
    let first = bytes.next()?;
    let is_scheme = first.is_ascii_alphabetic()
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-');
    is_scheme.then_some(head)
}

/// Whether a scheme-less token starts with something shaped like a domain name, so that plain
/// words in the pasted text are not read as hosts.
fn starts_with_domain(token: &str) -> bool {
    let rest = token.trim_start_matches(['/', '\\']);
    let host_end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    rest.get(..host_end).is_some_and(|host| host.contains('.'))
}

/// Removes brackets, quotes and sentence punctuation that cling to a link in running text.
fn strip_punctuation(token: &str) -> &str {
    token
        .trim_start_matches(['(', '[', '{', '<', '"', '\'', '«', '“', '‘'])
        .trim_end_matches([
            ')', ']', '}', '>', '"', '\'', '.', ',', ';', ':', '!', '?', '»', '”', '’',
        ])
}

/// Decides what a URL on a TikTok host points at, from its path alone.
fn classify_path(url: &Url, host: HostKind) -> Result<Link, LinkError> {
    let segments = path_segments(url).ok_or(LinkError::NotAVideo)?;

    match host {
        HostKind::ShortVm | HostKind::ShortVt => {
            let short_host = if host == HostKind::ShortVm {
                ShortHost::Vm
            } else {
                ShortHost::Vt
            };
            match segments.as_slice() {
                [code] => ShortLink::new(short_host, code)
                    .map(Link::Short)
                    .ok_or(LinkError::NotAVideo),
                _ => Err(LinkError::NotAVideo),
            }
        }
        HostKind::Web | HostKind::Share => {
            if let Some(id) = post_id(&segments) {
                return Ok(Link::Video(id));
            }
            match segments.as_slice() {
                [t, code] if host == HostKind::Web && t.eq_ignore_ascii_case("t") => {
                    ShortLink::new(ShortHost::Www, code)
                        .map(Link::Short)
                        .ok_or(LinkError::NotAVideo)
                }
                _ => Err(LinkError::NotAVideo),
            }
        }
    }
}

/// The path's segments, with one trailing slash allowed; `None` if a segment in the middle is
/// empty, which no link TikTok hands out has.
fn path_segments(url: &Url) -> Option<Vec<&str>> {
    let mut segments: Vec<&str> = url.path_segments()?.collect();
    if segments.last() == Some(&"") {
        segments.pop();
    }
    if segments.iter().any(|segment| segment.is_empty()) {
        return None;
    }
    Some(segments)
}

/// The post id in the path forms that name a single post.
fn post_id(segments: &[&str]) -> Option<VideoId> {
    // People retype links in capitals and TikTok still serves them, so keywords ignore case.
    let is = |segment: &str, keyword: &str| segment.eq_ignore_ascii_case(keyword);

    match segments {
        [user, kind, id] if user.starts_with('@') && (is(kind, "video") || is(kind, "photo")) => {
            parse_id(id)
        }
        [share, video, id] if is(share, "share") && is(video, "video") => parse_id(id),
        [i18n, share, video, id]
            if is(i18n, "i18n") && is(share, "share") && is(video, "video") =>
        {
            parse_id(id)
        }
        [v, page] if is(v, "v") => parse_id(strip_html_suffix(page)),
        [embed, id] if is(embed, "embed") => parse_id(id),
        [embed, v2, id] if is(embed, "embed") && is(v2, "v2") => parse_id(id),
        [player, v1, id] if is(player, "player") && is(v1, "v1") => parse_id(id),
        [video, id] if is(video, "video") => parse_id(id),
        _ => None,
    }
}

fn strip_html_suffix(page: &str) -> &str {
    const SUFFIX: &str = ".html";
    page.len()
        .checked_sub(SUFFIX.len())
        .and_then(|cut| Some((page.get(..cut)?, page.get(cut..)?)))
        .filter(|(_, suffix)| suffix.eq_ignore_ascii_case(SUFFIX))
        .map_or(page, |(stem, _)| stem)
}

fn parse_id(text: &str) -> Option<VideoId> {
    // u64's own parser would also take a leading '+', which is not how ids are written.
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().and_then(VideoId::new)
}

fn is_short_code(code: &str) -> bool {
    (1..=MAX_SHORT_CODE_LEN).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINKS_TSV: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/tiktok/links.tsv"
    );

    const ID: u64 = 7_571_863_205_253_778_710;

    fn id(raw: u64) -> VideoId {
        VideoId::new(raw).expect("test ids are non-zero")
    }

    fn video(raw: u64) -> Result<Link, LinkError> {
        Ok(Link::Video(id(raw)))
    }

    fn short(host: ShortHost, code: &str) -> Result<Link, LinkError> {
        Ok(Link::Short(
            ShortLink::new(host, code).expect("test codes are valid"),
        ))
    }

    #[test]
    fn every_row_of_the_link_corpus() {
        let corpus = match std::fs::read_to_string(LINKS_TSV) {
            Ok(corpus) => corpus,
            Err(err) => {
                let on_ci = std::env::var("CI").is_ok_and(|value| value == "true");
                assert!(
                    !on_ci,
                    "the link corpus {LINKS_TSV} must exist on CI: {err}"
                );
                eprintln!("skipping the link corpus test: cannot read {LINKS_TSV}: {err}");
                return;
            }
        };

        let mut checked = 0;
        for (index, line) in corpus.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let row = index + 1;
            let mut columns = line.split('\t');
            let input = columns.next().unwrap_or_default();
            let expect = columns.next().unwrap_or_default();
            let got = parse_link(input);

            match expect {
                "short" => assert!(
                    matches!(got, Ok(Link::Short(_))),
                    "row {row}: {input:?} should be a short link, got {got:?}"
                ),
                "reject" => assert!(
                    got.is_err(),
                    "row {row}: {input:?} should be rejected, got {got:?}"
                ),
                _ => {
                    let raw = expect
                        .strip_prefix("video:")
                        .unwrap_or_else(|| panic!("row {row}: unknown expectation {expect:?}"));
                    let want: VideoId = raw.parse().expect("the corpus holds valid ids");
                    assert_eq!(got, Ok(Link::Video(want)), "row {row}: {input:?}");
                }
            }
            checked += 1;
        }
        assert!(checked >= 50, "only {checked} rows checked");
    }

    #[test]
    fn video_id_text_form() {
        assert_eq!("1".parse(), Ok(id(1)));
        assert_eq!("18446744073709551615".parse(), Ok(id(u64::MAX)));
        assert_eq!(id(ID).to_string(), "7571863205253778710");
        assert_eq!(id(42).get(), 42);
        assert_eq!(VideoId::new(0), None);

        for bad in [
            "",
            "0",
            "000",
            "-1",
            "+1",
            " 1",
            "1 ",
            "12a",
            "0x10",
            "1.0",
            "18446744073709551616",
            "٣",
        ] {
            assert_eq!(bad.parse::<VideoId>(), Err(ParseVideoIdError), "{bad:?}");
        }
    }

    #[test]
    fn post_path_forms() {
        for link in [
            "https://www.tiktok.com/@someone/video/7571863205253778710",
            "https://www.tiktok.com/@someone/photo/7571863205253778710",
            "https://www.tiktok.com/@/video/7571863205253778710",
            "https://www.tiktok.com/@some.one/video/7571863205253778710",
            "https://www.tiktok.com/@some-one_/video/7571863205253778710",
            "https://www.tiktok.com/@%D1%82%D0%B5%D1%81%D1%82/video/7571863205253778710",
            "https://www.tiktok.com/@тест/video/7571863205253778710",
            "https://www.tiktok.com/@MS4wLjABAAAAxyz_-012/video/7571863205253778710",
            "https://www.tiktok.com/share/video/7571863205253778710",
            "https://t.tiktok.com/i18n/share/video/7571863205253778710/?_d=x",
            "https://m.tiktok.com/v/7571863205253778710.html",
            "https://m.tiktok.com/v/7571863205253778710",
            "https://www.tiktok.com/embed/7571863205253778710",
            "https://www.tiktok.com/embed/v2/7571863205253778710",
            "https://www.tiktok.com/player/v1/7571863205253778710?autoplay=1",
            "https://www.tiktok.com/video/7571863205253778710",
            "https://www.tiktokv.com/share/video/7571863205253778710/",
            "https://tiktokv.com/share/video/7571863205253778710",
        ] {
            assert_eq!(parse_link(link), video(ID), "{link}");
        }
    }

    #[test]
    fn trailing_slash_query_and_fragment_are_ignored() {
        for link in [
            "https://www.tiktok.com/@x/video/7571863205253778710/",
            "https://www.tiktok.com/@x/video/7571863205253778710?lang=en",
            "https://www.tiktok.com/@x/video/7571863205253778710#comments",
            "https://www.tiktok.com/@x/video/7571863205253778710/?a=1#b",
            "https://www.tiktok.com/@x/video/7571863205253778710?",
        ] {
            assert_eq!(parse_link(link), video(ID), "{link}");
        }
    }

    #[test]
    fn case_of_scheme_host_and_path_keywords_is_ignored() {
        assert_eq!(
            parse_link("HTTPS://WWW.TIKTOK.COM/@X/VIDEO/123"),
            video(123)
        );
        assert_eq!(parse_link("https://M.TikTok.com/V/123.HTML"), video(123));
        assert_eq!(
            parse_link("Https://www.tiktok.com/Embed/V2/123"),
            video(123)
        );
        assert_eq!(
            parse_link("https://www.tiktok.com/@x/Photo/123"),
            video(123)
        );
    }

    #[test]
    fn host_variants() {
        for link in [
            "http://www.tiktok.com/@x/video/123",
            "www.tiktok.com/@x/video/123",
            "tiktok.com/@x/video/123",
            "//www.tiktok.com/@x/video/123",
            "https://www.tiktok.com./@x/video/123",
            "https://www.tiktok.com:443/@x/video/123",
            "http://www.tiktok.com:80/@x/video/123",
            "https://m.tiktok.com/@x/video/123",
        ] {
            assert_eq!(parse_link(link), video(123), "{link}");
        }
    }

    #[test]
    fn short_links() {
        assert_eq!(
            parse_link("https://vm.tiktok.com/ZMRqBxMsV/"),
            short(ShortHost::Vm, "ZMRqBxMsV")
        );
        assert_eq!(
            parse_link("vt.tiktok.com/ZSe4FqkKd"),
            short(ShortHost::Vt, "ZSe4FqkKd")
        );
        assert_eq!(
            parse_link("https://www.tiktok.com/t/ZTRC5xgJp/"),
            short(ShortHost::Www, "ZTRC5xgJp")
        );
        assert_eq!(
            parse_link("https://tiktok.com/T/ZTRC5xgJp?_r=1"),
            short(ShortHost::Www, "ZTRC5xgJp")
        );
        assert_eq!(
            parse_link("https://m.tiktok.com/t/a_b-C"),
            short(ShortHost::Www, "a_b-C")
        );
        assert_eq!(
            parse_link("https://vm.tiktok.com/ZSHwo6gjkDWYc-0cnFY/"),
            short(ShortHost::Vm, "ZSHwo6gjkDWYc-0cnFY")
        );
        let longest = "a".repeat(64);
        assert_eq!(
            parse_link(&format!("https://vm.tiktok.com/{longest}")),
            short(ShortHost::Vm, &longest)
        );
    }

    #[test]
    fn short_link_request_parts() {
        let vm = ShortLink::new(ShortHost::Vm, "ZMabc").expect("valid code");
        assert_eq!(vm.host(), ShortHost::Vm);
        assert_eq!(vm.code(), "ZMabc");
        assert_eq!(vm.path(), "/ZMabc/");
        assert_eq!(vm.host().host_name(), "vm.tiktok.com");

        let www = ShortLink::new(ShortHost::Www, "ZTabc").expect("valid code");
        assert_eq!(www.path(), "/t/ZTabc/");
        assert_eq!(www.host().host_name(), "www.tiktok.com");
        assert_eq!(ShortHost::Vt.host_name(), "vt.tiktok.com");

        assert_eq!(ShortLink::new(ShortHost::Vm, ""), None);
        assert_eq!(ShortLink::new(ShortHost::Vm, "a/b"), None);
        assert_eq!(ShortLink::new(ShortHost::Vm, "a.b"), None);
        assert_eq!(ShortLink::new(ShortHost::Vm, &"a".repeat(65)), None);
    }

    #[test]
    fn bad_short_links() {
        for link in [
            "https://vm.tiktok.com/",
            "https://vm.tiktok.com",
            "https://vm.tiktok.com/ZMabc/extra",
            "https://vm.tiktok.com/ZM.abc",
            "https://vm.tiktok.com/ZM%20abc",
            "https://vt.tiktok.com/@someone/video/123",
            "https://vt.tiktok.com/t/ZMabc",
            "https://www.tiktok.com/t/",
            "https://www.tiktok.com/t/ZMabc/extra",
            "https://www.tiktok.com/t/ZM~abc",
            "https://t.tiktok.com/t/ZMabc",
            "https://www.tiktokv.com/t/ZMabc",
        ] {
            assert_eq!(parse_link(link), Err(LinkError::NotAVideo), "{link}");
        }
        let too_long = format!("https://vm.tiktok.com/{}", "a".repeat(65));
        assert_eq!(parse_link(&too_long), Err(LinkError::NotAVideo));
    }

    #[test]
    fn tiktok_pages_that_are_not_posts() {
        for link in [
            "https://www.tiktok.com/",
            "https://www.tiktok.com",
            "https://www.tiktok.com/?_r=1",
            "https://www.tiktok.com/@someone",
            "https://www.tiktok.com/@someone/",
            "https://www.tiktok.com/@someone/posts",
            "https://www.tiktok.com/@someone/likes",
            "https://www.tiktok.com/@someone/live",
            "https://www.tiktok.com/@someone/collection/mix-7371330159376370462",
            "https://www.tiktok.com/@someone/playlist/mix-7371330159376370462",
            "https://www.tiktok.com/music/original-sound-7571863209596881686",
            "https://www.tiktok.com/tag/fyp",
            "https://www.tiktok.com/effect/Some-Effect-123456",
            "https://www.tiktok.com/discover/funny-cats",
            "https://www.tiktok.com/live",
            "https://www.tiktok.com/live/123456",
            "https://www.tiktok.com/share/user/6000000000000000099",
            "https://www.tiktok.com/following",
            "https://www.tiktok.com/foryou",
            "https://www.tiktok.com/tiktoklite",
            "https://www.tiktok.com/explore",
            "https://www.tiktok.com/someone/video/123",
            "https://www.tiktok.com/@someone/video",
            "https://www.tiktok.com/@someone/video/",
            "https://www.tiktok.com/@someone/music/123",
            "https://www.tiktok.com/share/video",
            "https://www.tiktok.com/v/.html",
            "https://www.tiktok.com/embed/v3/123",
            "https://www.tiktok.com/player/v2/123",
            "https://t.tiktok.com/i18n/share/user/123",
        ] {
            assert_eq!(parse_link(link), Err(LinkError::NotAVideo), "{link}");
        }
    }

    #[test]
    fn extra_segments_and_empty_segments() {
        for link in [
            "https://www.tiktok.com/@x/video/123/comments",
            "https://www.tiktok.com/@x/video/123//",
            "https://www.tiktok.com//@x/video/123",
            "https://www.tiktok.com/@x//video/123",
            "https://www.tiktok.com/share/video/123/x",
            "https://m.tiktok.com/v/123.html/x",
            "https://www.tiktok.com/embed/123/x",
        ] {
            assert_eq!(parse_link(link), Err(LinkError::NotAVideo), "{link}");
        }
    }

    #[test]
    fn ids_that_are_not_post_ids() {
        for link in [
            "https://www.tiktok.com/@x/video/0",
            "https://www.tiktok.com/@x/video/000",
            "https://www.tiktok.com/@x/video/18446744073709551616",
            "https://www.tiktok.com/@x/video/99999999999999999999999",
            "https://www.tiktok.com/@x/video/-123",
            "https://www.tiktok.com/@x/video/+123",
            "https://www.tiktok.com/@x/video/123abc",
            "https://www.tiktok.com/@x/video/abc",
            "https://www.tiktok.com/@x/video/12%203",
            "https://www.tiktok.com/@x/video/%31%32%33",
            "https://www.tiktok.com/@x/video/1.5",
            "https://www.tiktok.com/@x/video/１２３",
            "https://m.tiktok.com/v/123.htm",
            "https://m.tiktok.com/v/0.html",
        ] {
            assert_eq!(parse_link(link), Err(LinkError::NotAVideo), "{link}");
        }
        assert_eq!(
            parse_link("https://www.tiktok.com/@x/video/18446744073709551615"),
            video(u64::MAX)
        );
        assert_eq!(
            parse_link("https://www.tiktok.com/@x/video/0042"),
            video(42)
        );
    }

    #[test]
    fn look_alike_hosts() {
        for link in [
            "https://tiktok.com.example.org/@x/video/123",
            "https://nottiktok.com/@x/video/123",
            "https://www.nottiktok.com/@x/video/123",
            "https://tiktok.co/@x/video/123",
            "https://www.tiktok.com.evil/@x/video/123",
            "https://www.douyin.com/video/6961737553342991651",
            "https://v.douyin.com/iNkaTqUn/",
            "https://evil.com/https://www.tiktok.com/@x/video/123",
            "https://evil.com/?u=https://www.tiktok.com/@x/video/123",
            "https://www.tiktok.com..//@x/video/123",
            "https://vm.tiktok.com.evil.org/ZMabc/",
            "https://wwwtiktok.com/@x/video/123",
            "https://www.tiktok.com%2F@evil.com/@x/video/123",
        ] {
            assert_eq!(parse_link(link), Err(LinkError::NotTikTok), "{link}");
        }
    }

    #[test]
    fn homographs_are_other_hosts() {
        // Cyrillic "о" (U+043E) and Cyrillic "і" (U+0456) look like their Latin twins.
        for link in [
            "https://www.tiktоk.com/@x/video/123",
            "https://www.tіktok.com/@x/video/123",
            "https://vm.tiktоk.com/ZMabc/",
            "https://www.xn--tktok-n2e.com/@x/video/123",
        ] {
            assert_eq!(parse_link(link), Err(LinkError::NotTikTok), "{link}");
        }
        // Punycode that does not decode is not a host at all.
        assert_eq!(
            parse_link("https://xn--www-tiktok.com/@x/video/123"),
            Err(LinkError::NotALink)
        );
        // Full-width Latin letters are the same letters under IDNA mapping.
        assert_eq!(
            parse_link("https://ｗｗｗ.ｔｉｋｔｏｋ.ｃｏｍ/@x/video/123"),
            video(123)
        );
    }

    #[test]
    fn credentials_ports_and_ip_literals() {
        for link in [
            "https://user@www.tiktok.com/@x/video/123",
            "https://user:pass@www.tiktok.com/@x/video/123",
            "https://:pass@www.tiktok.com/@x/video/123",
            "https://www.tiktok.com@evil.com/@x/video/123",
            "https://www.tiktok.com:444/@x/video/123",
            "https://www.tiktok.com:80/@x/video/123",
            "http://www.tiktok.com:443/@x/video/123",
            "https://www.tiktok.com:8080/@x/video/123",
            "tiktok.com:8443/@x/video/123",
            "https://127.0.0.1/@x/video/123",
            "https://0x7f.1/@x/video/123",
            "https://2130706433/@x/video/123",
            "https://[::1]/@x/video/123",
            "http://[2001:db8::1]/@x/video/123",
            "192.168.0.1/@x/video/123",
        ] {
            assert_eq!(parse_link(link), Err(LinkError::NotTikTok), "{link}");
        }
    }

    #[test]
    fn schemes_other_than_http() {
        for link in [
            "javascript:alert(1)",
            "javascript://www.tiktok.com/%0aalert(1)",
            "ftp://www.tiktok.com/@x/video/123",
            "file:///etc/passwd",
            "file://www.tiktok.com/@x/video/123",
            "data:text/html,<b>hi</b>",
            "mailto:someone@tiktok.com",
            "wss://www.tiktok.com/@x/video/123",
            "snssdk1233://aweme/detail/123",
        ] {
            assert_eq!(parse_link(link), Err(LinkError::NotALink), "{link}");
        }
    }

    #[test]
    fn empty_too_long_and_plain_text() {
        assert_eq!(parse_link(""), Err(LinkError::Empty));
        assert_eq!(parse_link(" \t\n "), Err(LinkError::Empty));
        assert_eq!(parse_link("hello"), Err(LinkError::NotALink));
        assert_eq!(parse_link("just some words!"), Err(LinkError::NotALink));
        assert_eq!(parse_link("7571863205253778710"), Err(LinkError::NotALink));
        assert_eq!(parse_link("@someone"), Err(LinkError::NotALink));
        assert_eq!(parse_link("example.org"), Err(LinkError::NotTikTok));
        assert_eq!(parse_link("https://"), Err(LinkError::NotALink));

        let padded = format!("https://www.tiktok.com/@x/video/123?p={}", "a".repeat(2000));
        assert_eq!(parse_link(&padded), video(123));
        let too_long = format!("https://www.tiktok.com/@x/video/123?p={}", "a".repeat(2048));
        assert_eq!(parse_link(&too_long), Err(LinkError::TooLong));
        let spaces = " ".repeat(MAX_LINK_LEN + 1);
        assert_eq!(parse_link(&spaces), Err(LinkError::TooLong));
    }

    #[test]
    fn text_around_the_link() {
        assert_eq!(
            parse_link("look at this https://vm.tiktok.com/ZMabc/ !!"),
            short(ShortHost::Vm, "ZMabc")
        );
        assert_eq!(
            parse_link("  https://www.tiktok.com/@x/video/123\n"),
            video(123)
        );
        assert_eq!(
            parse_link("see (www.tiktok.com/@x/video/123), thanks."),
            video(123)
        );
        assert_eq!(
            parse_link("\"https://www.tiktok.com/@x/video/123\""),
            video(123)
        );
        assert_eq!(
            parse_link("Check out this video! #fyp https://vm.tiktok.com/ZMabc/."),
            short(ShortHost::Vm, "ZMabc")
        );
        assert_eq!(
            parse_link("mirror https://example.org/x then https://www.tiktok.com/@x/video/123"),
            video(123)
        );
        assert_eq!(
            parse_link("lien\u{a0}: https://www.tiktok.com/@x/video/123"),
            video(123)
        );

        // The first TikTok link decides, even when a later one would be a post.
        assert_eq!(
            parse_link("https://www.tiktok.com/@me and https://www.tiktok.com/@me/video/123"),
            Err(LinkError::NotAVideo)
        );
        assert_eq!(
            parse_link("only https://example.org/watch here"),
            Err(LinkError::NotTikTok)
        );
    }

    #[test]
    fn redirect_targets() {
        let cases = [
            (
                "https://www.tiktok.com/@someone/video/7571863205253778710?_r=1&_t=ZS-8",
                ShortTarget::Video(id(ID)),
            ),
            (
                "https://www.tiktok.com/@someone/photo/7571863205253778710",
                ShortTarget::Video(id(ID)),
            ),
            (
                "https://m.tiktok.com/v/7571863205253778710.html?u_code=x",
                ShortTarget::Video(id(ID)),
            ),
            ("https://www.tiktok.com/?_r=1", ShortTarget::Gone),
            ("https://www.tiktok.com/", ShortTarget::Gone),
            ("https://www.tiktok.com", ShortTarget::Gone),
            ("https://m.tiktok.com/?_r=1&_t=abc", ShortTarget::Gone),
            ("  https://tiktok.com/  ", ShortTarget::Gone),
            ("https://www.tiktok.com/@someone", ShortTarget::NotAVideo),
            (
                "https://www.tiktok.com/@someone?_t=1",
                ShortTarget::NotAVideo,
            ),
            (
                "https://www.tiktok.com/@someone/live?enter_from_merge=others_homepage",
                ShortTarget::NotAVideo,
            ),
            ("https://www.tiktok.com/foryou", ShortTarget::NotAVideo),
            ("https://www.tiktok.com/login", ShortTarget::NotAVideo),
            ("https://vm.tiktok.com/ZMabc/", ShortTarget::NotAVideo),
            ("https://www.tiktok.com/t/ZMabc/", ShortTarget::NotAVideo),
            ("https://vm.tiktok.com/", ShortTarget::NotAVideo),
            (
                "https://example.org/@someone/video/7571863205253778710",
                ShortTarget::NotAVideo,
            ),
            ("https://example.org/", ShortTarget::NotAVideo),
            (
                "https://www.douyin.com/video/6961737553342991651",
                ShortTarget::NotAVideo,
            ),
            (
                "https://user@www.tiktok.com/@x/video/123",
                ShortTarget::NotAVideo,
            ),
            ("https://www.tiktok.com:8443/", ShortTarget::NotAVideo),
            ("/@someone/video/123", ShortTarget::NotAVideo),
            ("www.tiktok.com/@someone/video/123", ShortTarget::NotAVideo),
            ("", ShortTarget::NotAVideo),
            ("%%%", ShortTarget::NotAVideo),
            ("javascript:alert(1)", ShortTarget::NotAVideo),
        ];
        for (location, want) in cases {
            assert_eq!(classify_redirect(location), want, "{location:?}");
        }
        let huge = format!("https://www.tiktok.com/?p={}", "a".repeat(MAX_LINK_LEN));
        assert_eq!(classify_redirect(&huge), ShortTarget::NotAVideo);
    }

    #[test]
    fn canonical_url_form() {
        assert_eq!(
            canonical_url(id(ID)),
            "https://www.tiktok.com/@/video/7571863205253778710"
        );
        assert_eq!(parse_link(&canonical_url(id(1))), video(1));
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            LinkError::TooLong.to_string(),
            "the link is longer than 2048 bytes"
        );
        for error in [
            LinkError::Empty,
            LinkError::NotALink,
            LinkError::NotTikTok,
            LinkError::NotAVideo,
        ] {
            assert!(!error.to_string().is_empty());
        }
    }

    /// Pieces that real and crafted links are made of, so generated strings reach deep into the
    /// parser instead of failing at the first character.
    const FRAGMENTS: &[&str] = &[
        "https://",
        "http://",
        "HTTPS://",
        "//",
        "www.",
        "vm.",
        "vt.",
        "m.",
        "t.",
        "tiktok.com",
        "tiktokv.com",
        "tiktоk.com",
        "example.org",
        ".",
        "/",
        "\\",
        "@",
        "@someone",
        "video",
        "VIDEO",
        "photo",
        "share",
        "i18n",
        "v",
        ".html",
        "embed",
        "v2",
        "player",
        "v1",
        "t",
        "123",
        "0",
        "-1",
        "7571863205253778710",
        "18446744073709551616",
        "ZMabc",
        "?",
        "#",
        "&",
        "=",
        ":",
        ":443",
        ":8080",
        "%",
        "%2e",
        "%2F",
        "%40",
        "[::1]",
        "127.0.0.1",
        " ",
        "\t",
        "\u{a0}",
        "\u{3002}",
        "é",
        "(",
        ")",
        "\"",
        "javascript:",
        "data:",
        "xn--",
    ];

    fn tiktokish() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..16)
            .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = parse_link(&text);
            let _ = classify_redirect(&text);
        }

        #[test]
        fn tiktokish_text_never_panics(text in tiktokish()) {
            let parsed = parse_link(&text);
            let _ = classify_redirect(&text);
            // Whatever is accepted must be something that can be fetched safely.
            if let Ok(Link::Short(link)) = parsed {
                prop_assert!(is_short_code(link.code()));
            }
        }

        #[test]
        fn canonical_url_round_trips(raw in 1..=u64::MAX) {
            let video_id = id(raw);
            prop_assert_eq!(parse_link(&canonical_url(video_id)), Ok(Link::Video(video_id)));
            prop_assert_eq!(
                classify_redirect(&canonical_url(video_id)),
                ShortTarget::Video(video_id)
            );
            prop_assert_eq!(video_id.to_string().parse::<VideoId>(), Ok(video_id));
        }

        #[test]
        fn post_links_with_any_user_name(user in "[A-Za-z0-9._%-]{0,80}", raw in 1..=u64::MAX) {
            let link = format!("https://www.tiktok.com/@{user}/video/{raw}?lang=en");
            prop_assert_eq!(parse_link(&link), video(raw));
        }
    }
}
