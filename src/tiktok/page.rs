//! Reading the public play count from the HTML of a TikTok post page.
//!
//! TikTok puts the page's data as JSON into one script element. That element is found by its id
//! with plain string searches, and its JSON is deserialised into small structs that name only the
//! fields needed here; serde skips everything else without building a tree of it. This keeps a
//! read of a half-megabyte page well under a millisecond and avoids an HTML parser.
//!
//! Every outcome is a [`PageReading`]; no input makes the reader fail or panic.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The id of the script element that holds the data of the current page format.
pub const DATA_SCRIPT_ID: &str = "__UNIVERSAL_DATA_FOR_REHYDRATION__";

/// The id of the data script of an older page format, still read for pages saved or served in it.
const NEXT_DATA_SCRIPT_ID: &str = "__NEXT_DATA__";

/// Longest opening tag examined; real ones are under a hundred bytes, and the bound keeps
/// crafted input from making the search quadratic.
const MAX_OPEN_TAG_LEN: usize = 4096;

/// Largest whole number a JSON float can carry exactly.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

/// What a post page says about the post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PageReading {
    /// The public play count.
    Count(u64),
    /// The post is private (status 10216) or its account is (status 10222).
    Private,
    /// The post is not shown in the region the page was fetched from (status 10231).
    Region,
    /// TikTok says the post does not exist (status 10204). TikTok also says this to networks it
    /// distrusts, so on its own it is no proof that the post was removed.
    NotFound,
    /// The page has no usable data: a challenge or captcha page, a login page, an empty body, or
    /// data that cannot be read. The text names which, for logs.
    Blocked(&'static str),
    /// The data is there with status 0, but it holds no readable play count.
    NoCount,
    /// A non-zero status not listed above.
    OtherStatus(i64),
}

/// Reads a post page fetched from TikTok.
///
/// The texts carried by [`PageReading::Blocked`] are meant for logs, not for matching on.
pub fn read_page(html: &str) -> PageReading {
    if html.trim().is_empty() {
        return PageReading::Blocked("empty body");
    }

    match find_script(html, DATA_SCRIPT_ID) {
        Script::Found(json) => return read_universal_data(json),
        Script::Unterminated => return PageReading::Blocked("unterminated data script"),
        Script::Absent => {}
    }

    match find_script(html, NEXT_DATA_SCRIPT_ID) {
        Script::Found(json) => read_next_data(json),
        Script::Unterminated => PageReading::Blocked("unterminated data script"),
        Script::Absent => PageReading::Blocked(why_no_data(html)),
    }
}

fn read_universal_data(json: &str) -> PageReading {
    let Ok(data) = serde_json::from_str::<UniversalData>(json) else {
        return PageReading::Blocked("unparseable page data");
    };
    let Some(detail) = data.scope.and_then(|scope| scope.video_detail) else {
        return PageReading::Blocked("no post in the page data");
    };
    classify(detail.status_code, detail.item_info)
}

fn read_next_data(json: &str) -> PageReading {
    let Ok(data) = serde_json::from_str::<NextData>(json) else {
        return PageReading::Blocked("unparseable page data");
    };
    let Some(page) = data.props.and_then(|props| props.page_props) else {
        return PageReading::Blocked("no post in the page data");
    };
    classify(page.status_code, page.item_info)
}

/// Turns the status and the post data, in either page format, into a reading.
fn classify(status: Option<Number>, item_info: Option<ItemInfo>) -> PageReading {
    // TikTok leaves the status out on some successful pages; out means 0.
    let status = match status {
        None => 0,
        Some(number) => match number.as_i64() {
            Some(status) => status,
            None => return PageReading::Blocked("unreadable status code"),
        },
    };

    // The status decides even when post data came along with it: only status 0 vouches for
    // that data.
    match status {
        0 => {}
        10216 | 10222 => return PageReading::Private,
        10231 => return PageReading::Region,
        10204 => return PageReading::NotFound,
        other => return PageReading::OtherStatus(other),
    }

    // Status 0 without the post is not a page TikTok serves for a healthy post, and taking it as
    // "not found" could wrongly count as proof of removal.
    let Some(item) = item_info.and_then(|info| info.item_struct) else {
        return PageReading::Blocked("no post in the page data");
    };

    // statsV2 carries the exact count; stats rounds large counts, so it is only a fallback.
    let play_count = |stats: Option<Stats>| stats.and_then(|s| s.play_count)?.as_count();
    match play_count(item.stats_v2).or_else(|| play_count(item.stats)) {
        Some(count) => PageReading::Count(count),
        None => PageReading::NoCount,
    }
}

#[derive(Deserialize)]
struct UniversalData {
    #[serde(rename = "__DEFAULT_SCOPE__")]
    scope: Option<DefaultScope>,
}

#[derive(Deserialize)]
struct DefaultScope {
    #[serde(rename = "webapp.video-detail")]
    video_detail: Option<VideoDetail>,
}

#[derive(Deserialize)]
struct VideoDetail {
    #[serde(rename = "statusCode")]
    status_code: Option<Number>,
    #[serde(rename = "itemInfo")]
    item_info: Option<ItemInfo>,
}

#[derive(Deserialize)]
struct NextData {
    props: Option<NextProps>,
}

#[derive(Deserialize)]
struct NextProps {
    #[serde(rename = "pageProps")]
    page_props: Option<NextPageProps>,
}

#[derive(Deserialize)]
struct NextPageProps {
    #[serde(rename = "statusCode")]
    status_code: Option<Number>,
    #[serde(rename = "itemInfo")]
    item_info: Option<ItemInfo>,
}

#[derive(Deserialize)]
struct ItemInfo {
    #[serde(rename = "itemStruct")]
    item_struct: Option<ItemStruct>,
}

#[derive(Deserialize)]
struct ItemStruct {
    #[serde(rename = "statsV2")]
    stats_v2: Option<Stats>,
    stats: Option<Stats>,
}

#[derive(Deserialize)]
struct Stats {
    #[serde(rename = "playCount")]
    play_count: Option<Number>,
}

/// A JSON value that should hold a whole number.
///
/// TikTok sends the same field as a number on one page and as a string on another, so both are
/// read. Any other value is kept as `Unreadable` rather than failing the whole page, so that one
/// odd field only loses that field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    NonNegative(u64),
    Negative(i64),
    Unreadable,
}

impl Number {
    fn as_count(self) -> Option<u64> {
        match self {
            Number::NonNegative(count) => Some(count),
            Number::Negative(_) | Number::Unreadable => None,
        }
    }

    fn as_i64(self) -> Option<i64> {
        match self {
            Number::NonNegative(value) => i64::try_from(value).ok(),
            Number::Negative(value) => Some(value),
            Number::Unreadable => None,
        }
    }

    fn from_text(text: &str) -> Number {
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        // Only plain decimal digits: "1.2M", "1e3" or " 12" are display text, not counts.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Number::Unreadable;
        }
        if negative {
            text.parse().map_or(Number::Unreadable, Number::Negative)
        } else {
            digits
                .parse()
                .map_or(Number::Unreadable, Number::NonNegative)
        }
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

struct NumberVisitor;

impl<'de> Visitor<'de> for NumberVisitor {
    type Value = Number;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_u64<E>(self, value: u64) -> Result<Number, E> {
        Ok(Number::NonNegative(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Number, E> {
        Ok(u64::try_from(value).map_or(Number::Negative(value), Number::NonNegative))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Number, E> {
        // A float only counts when it is a whole number it can carry exactly; 1.5 plays or
        // 1e30 plays are not counts.
        let whole = value.is_finite() && value.fract() == 0.0 && value.abs() <= MAX_EXACT_FLOAT;
        Ok(if !whole {
            Number::Unreadable
        } else if value >= 0.0 {
            Number::NonNegative(value as u64)
        } else {
            Number::Negative(value as i64)
        })
    }

    fn visit_str<E>(self, value: &str) -> Result<Number, E> {
        Ok(Number::from_text(value))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Number, E> {
        Ok(Number::Unreadable)
    }

    fn visit_unit<E>(self) -> Result<Number, E> {
        Ok(Number::Unreadable)
    }

    fn visit_none<E>(self) -> Result<Number, E> {
        Ok(Number::Unreadable)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Number, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Number::Unreadable)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Number, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Number::Unreadable)
    }
}

enum Script<'a> {
    /// The text between the opening tag and `</script>`.
    Found(&'a str),
    /// The opening tag is there but the page ends before the script does.
    Unterminated,
    Absent,
}

/// Finds the script element whose `id` attribute is exactly `id`.
///
/// Searches for the id text, then checks that the tag it sits in is a script opening tag with
/// that id. The id text also appears elsewhere (in code that looks the element up), which the
/// check rules out.
fn find_script<'a>(html: &'a str, id: &str) -> Script<'a> {
    // Every '<' before this offset has been looked at already, so each is examined at most once
    // however often the id text repeats.
    let mut examined_to = 0;

    while let Some(found) = html.get(examined_to..).and_then(|rest| rest.find(id)) {
        let at = examined_to + found;
        let window_start = examined_to;
        examined_to = at + id.len();

        let Some(lt) = html
            .get(window_start..at)
            .and_then(|window| window.rfind('<'))
            .map(|offset| window_start + offset)
        else {
            continue;
        };
        if at - lt > MAX_OPEN_TAG_LEN {
            continue;
        }
        let Some(tag) = script_open_tag(html, lt) else {
            continue;
        };
        if tag.id != Some(id) {
            continue;
        }

        let Some(body) = html.get(tag.end..) else {
            return Script::Unterminated;
        };
        return match closing_script_tag(body).and_then(|len| body.get(..len)) {
            Some(json) => Script::Found(json),
            None => Script::Unterminated,
        };
    }
    Script::Absent
}

struct OpenTag<'a> {
    /// The value of the first `id` attribute, as HTML ignores repeated ones.
    id: Option<&'a str>,
    /// Offset just past the closing `>`.
    end: usize,
}

/// Reads a `<script ...>` opening tag starting at `lt`, following HTML's attribute syntax closely
/// enough that quoting styles, attribute order and a `>` inside a quoted value do not matter.
fn script_open_tag(html: &str, lt: usize) -> Option<OpenTag<'_>> {
    const NAME: &str = "script";

    let bytes = html.as_bytes();
    let limit = lt.saturating_add(MAX_OPEN_TAG_LEN).min(bytes.len());
    let at = |i: usize| bytes.get(i).copied().filter(|_| i < limit);
    let is_space = |b: u8| b.is_ascii_whitespace();

    let name_end = lt + 1 + NAME.len();
    if !html.get(lt + 1..name_end)?.eq_ignore_ascii_case(NAME) {
        return None;
    }
    if !at(name_end).is_some_and(|b| is_space(b) || b == b'>' || b == b'/') {
        return None;
    }

    let mut i = name_end;
    let mut id = None;
    loop {
        while at(i).is_some_and(|b| is_space(b) || b == b'/') {
            i += 1;
        }
        if at(i)? == b'>' {
            return Some(OpenTag { id, end: i + 1 });
        }

        let name_start = i;
        while at(i).is_some_and(|b| !(is_space(b) || b == b'=' || b == b'>' || b == b'/')) {
            i += 1;
        }
        let attribute = html.get(name_start..i)?;
        while at(i).is_some_and(is_space) {
            i += 1;
        }

        let mut value = None;
        if at(i) == Some(b'=') {
            i += 1;
            while at(i).is_some_and(is_space) {
                i += 1;
            }
            match at(i)? {
                quote @ (b'"' | b'\'') => {
                    let start = i + 1;
                    i = start;
                    while at(i)? != quote {
                        i += 1;
                    }
                    value = html.get(start..i);
                    i += 1;
                }
                _ => {
                    let start = i;
                    while at(i).is_some_and(|b| !(is_space(b) || b == b'>')) {
                        i += 1;
                    }
                    value = html.get(start..i);
                }
            }
        }

        if id.is_none() && attribute.eq_ignore_ascii_case("id") {
            id = value;
        }
    }
}

/// The offset of the first `</script` in `body`, in any letter case.
fn closing_script_tag(body: &str) -> Option<usize> {
    // Searching for the single byte '<' is several times faster than for "</" and JSON data
    // hardly ever contains it, so the check after each hit is rare.
    let mut from = 0;
    while let Some(found) = body.get(from..)?.find('<') {
        let at = from + found;
        if body
            .get(at + 1..at + 8)
            .is_some_and(|name| name.eq_ignore_ascii_case("/script"))
        {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Names, for logs, the kind of page that came back instead of a post page.
///
/// Regular post pages mention "captcha" and "login" in their configuration, so only markup that
/// belongs to those pages themselves is looked for.
fn why_no_data(html: &str) -> &'static str {
    const CHALLENGE: [&str; 2] = ["please wait", "_wafchallengeid"];
    const CAPTCHA: [&str; 5] = [
        "captcha-verify",
        "captcha_verify",
        "secsdk-captcha",
        "id=\"captcha",
        "class=\"captcha",
    ];

    if CHALLENGE
        .iter()
        .any(|marker| contains_ignore_case(html, marker))
    {
        "challenge page"
    } else if CAPTCHA
        .iter()
        .any(|marker| contains_ignore_case(html, marker))
    {
        "captcha page"
    } else if page_title(html).is_some_and(|title| {
        contains_ignore_case(title, "log in") || contains_ignore_case(title, "login")
    }) {
        "login page"
    } else {
        "no data script"
    }
}

fn page_title(html: &str) -> Option<&str> {
    let open = find_ignore_case(html, "<title")?;
    let after_open = open + html.get(open..)?.find('>')? + 1;
    let rest = html.get(after_open..)?;
    let len = find_ignore_case(rest, "</title").unwrap_or(rest.len());
    rest.get(..len)
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    find_ignore_case(haystack, needle).is_some()
}

/// ASCII case-insensitive search; only used on pages that are already known to be unusual.
fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/fixtures/tiktok/");

    const REAL_PAGE: &str = "universal_video_2025-12.html";

    /// Reads a saved page; on CI a missing page fails the test, elsewhere the test is skipped.
    fn fixture(name: &str) -> Option<String> {
        let path = format!("{FIXTURES}{name}");
        match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(err) => {
                let on_ci = std::env::var("CI").is_ok_and(|value| value == "true");
                assert!(!on_ci, "the saved page {path} must exist on CI: {err}");
                eprintln!("skipping: cannot read {path}: {err}");
                None
            }
        }
    }

    /// The real page, read once for all the cases that derive pages from it.
    fn real_page() -> Option<&'static str> {
        static PAGE: OnceLock<Option<String>> = OnceLock::new();
        PAGE.get_or_init(|| fixture(REAL_PAGE)).as_deref()
    }

    /// The real page with each `(from, to)` replacement applied; each `from` must occur.
    fn edited(page: &str, edits: &[(&str, &str)]) -> String {
        edits.iter().fold(page.to_owned(), |page, (from, to)| {
            assert!(
                page.contains(from),
                "the saved page no longer contains {from:?}"
            );
            page.replacen(from, to, 1)
        })
    }

    const STATUS: &str = r#""statusCode":0"#;
    const STATS_V2: &str = r#""statsV2":"#;
    const V2_COUNT: &str = r#""playCount":"192100""#;
    const STATS_COUNT: &str = r#""playCount":192100"#;
    const ITEM_INFO: &str = r#""itemInfo":"#;

    /// A small page in the current format around the given `webapp.video-detail` JSON.
    fn universal_page(detail: &str) -> String {
        format!(
            "<html><body><script id=\"{DATA_SCRIPT_ID}\" type=\"application/json\">\
             {{\"__DEFAULT_SCOPE__\":{{\"webapp.video-detail\":{detail}}}}}</script></body></html>"
        )
    }

    #[test]
    fn saved_pages() {
        if let Some(page) = fixture(REAL_PAGE) {
            assert_eq!(read_page(&page), PageReading::Count(192_100));
        }
        if let Some(page) = fixture("nextdata_video_2020-10.html") {
            assert_eq!(read_page(&page), PageReading::Count(25_700));
        }
        if let Some(page) = fixture("universal_video_minimal_nostats.html") {
            assert_eq!(read_page(&page), PageReading::NoCount);
        }
    }

    #[test]
    fn status_codes_decide() {
        let Some(page) = real_page() else { return };
        let cases = [
            ("10216", PageReading::Private),
            ("10222", PageReading::Private),
            ("10231", PageReading::Region),
            ("10204", PageReading::NotFound),
            ("12345", PageReading::OtherStatus(12345)),
            ("-1", PageReading::OtherStatus(-1)),
            ("\"10216\"", PageReading::Private),
        ];
        for (code, want) in cases {
            let status = format!(r#""statusCode":{code}"#);

            // As TikTok sends it: no post data next to a non-zero status.
            let without_item = edited(page, &[(STATUS, &status), (ITEM_INFO, r#""gone":"#)]);
            assert_eq!(read_page(&without_item), want, "status {code} without item");

            // The status wins even over a complete post.
            let with_item = edited(page, &[(STATUS, &status)]);
            assert_eq!(read_page(&with_item), want, "status {code} with item");
        }
    }

    #[test]
    fn missing_status_means_zero() {
        let Some(page) = real_page() else { return };
        let page = edited(page, &[(STATUS, r#""statusCodeGone":0"#)]);
        assert_eq!(read_page(&page), PageReading::Count(192_100));

        let null_status = universal_page(
            r#"{"statusCode":null,"itemInfo":{"itemStruct":{"stats":{"playCount":5}}}}"#,
        );
        assert_eq!(read_page(&null_status), PageReading::Count(5));
    }

    #[test]
    fn unreadable_status_is_blocked() {
        let Some(page) = real_page() else { return };
        for status in [r#""x""#, "1.5", "true", "{}", "99999999999999999999"] {
            let page = edited(page, &[(STATUS, &format!(r#""statusCode":{status}"#))]);
            assert!(
                matches!(read_page(&page), PageReading::Blocked(_)),
                "status {status}"
            );
        }
    }

    #[test]
    fn stats_is_the_fallback_for_stats_v2() {
        let Some(page) = real_page() else { return };
        let page = edited(
            page,
            &[
                (STATS_V2, r#""statsV2Gone":"#),
                (STATS_COUNT, r#""playCount":777"#),
            ],
        );
        assert_eq!(read_page(&page), PageReading::Count(777));
    }

    #[test]
    fn stats_v2_is_preferred() {
        let Some(page) = real_page() else { return };
        let page = edited(page, &[(STATS_COUNT, r#""playCount":777"#)]);
        assert_eq!(read_page(&page), PageReading::Count(192_100));
    }

    #[test]
    fn stats_v2_count_as_a_number() {
        let Some(page) = real_page() else { return };
        let page = edited(page, &[(V2_COUNT, r#""playCount":192101"#)]);
        assert_eq!(read_page(&page), PageReading::Count(192_101));
    }

    #[test]
    fn stats_count_as_a_string() {
        let Some(page) = real_page() else { return };
        let page = edited(
            page,
            &[
                (STATS_V2, r#""statsV2Gone":"#),
                (STATS_COUNT, r#""playCount":"778""#),
            ],
        );
        assert_eq!(read_page(&page), PageReading::Count(778));
    }

    #[test]
    fn unreadable_counts_fall_through() {
        let Some(page) = real_page() else { return };
        let garbage = [
            r#""-5""#,
            "-5",
            r#""abc""#,
            r#""""#,
            r#"" 12""#,
            r#""1.2M""#,
            r#""1e3""#,
            r#""1.5""#,
            "1.5",
            "-0.5",
            "1e30",
            r#""18446744073709551616""#,
            "18446744073709551616",
            "null",
            "true",
            "{}",
            r#"{"a":[1,2]}"#,
            "[1]",
        ];
        for value in garbage {
            let count = format!(r#""playCount":{value}"#);

            let v2_bad = edited(
                page,
                &[(V2_COUNT, &count), (STATS_COUNT, r#""playCount":777"#)],
            );
            assert_eq!(
                read_page(&v2_bad),
                PageReading::Count(777),
                "statsV2 {value}"
            );

            let both_bad = edited(page, &[(V2_COUNT, &count), (STATS_COUNT, &count)]);
            assert_eq!(read_page(&both_bad), PageReading::NoCount, "both {value}");
        }
    }

    #[test]
    fn count_edge_values() {
        let Some(page) = real_page() else { return };
        let cases = [
            (r#""0""#, 0),
            ("0", 0),
            (r#""18446744073709551615""#, u64::MAX),
            ("18446744073709551615", u64::MAX),
            ("5.0", 5),
            (r#""007""#, 7),
        ];
        for (value, want) in cases {
            let page = edited(page, &[(V2_COUNT, &format!(r#""playCount":{value}"#))]);
            assert_eq!(read_page(&page), PageReading::Count(want), "{value}");
        }
    }

    #[test]
    fn no_stats_at_all() {
        let Some(page) = real_page() else { return };
        let page = edited(
            page,
            &[
                (STATS_V2, r#""statsV2Gone":"#),
                (r#""stats":"#, r#""statsGone":"#),
            ],
        );
        assert_eq!(read_page(&page), PageReading::NoCount);
    }

    #[test]
    fn status_zero_without_the_post() {
        let Some(page) = real_page() else { return };
        let page = edited(page, &[(ITEM_INFO, r#""gone":"#)]);
        assert!(matches!(read_page(&page), PageReading::Blocked(_)));

        let no_item_struct = universal_page(r#"{"statusCode":0,"itemInfo":{}}"#);
        assert!(matches!(
            read_page(&no_item_struct),
            PageReading::Blocked(_)
        ));
    }

    #[test]
    fn data_without_video_detail() {
        let Some(page) = real_page() else { return };
        let page = edited(page, &[(r#""webapp.video-detail":"#, r#""webapp.other":"#)]);
        assert!(matches!(read_page(&page), PageReading::Blocked(_)));

        let no_scope = format!("<script id=\"{DATA_SCRIPT_ID}\">{{}}</script>");
        assert!(matches!(read_page(&no_scope), PageReading::Blocked(_)));
    }

    #[test]
    fn data_script_removed() {
        let Some(page) = real_page() else { return };
        let page = edited(page, &[(DATA_SCRIPT_ID, "something-else")]);
        assert_eq!(read_page(&page), PageReading::Blocked("no data script"));
    }

    #[test]
    fn truncated_data() {
        let Some(page) = real_page() else { return };

        // The JSON is cut short but the element is closed.
        let page_with_cut_json = edited(page, &[(r#""webapp.a-b":"#, "</script>")]);
        assert_eq!(
            read_page(&page_with_cut_json),
            PageReading::Blocked("unparseable page data")
        );

        // The download stopped in the middle of the data.
        let middle = page
            .find(V2_COUNT)
            .expect("the saved page has a statsV2 count");
        let cut = page
            .get(..middle)
            .expect("the match starts on a char boundary");
        assert_eq!(
            read_page(cut),
            PageReading::Blocked("unterminated data script")
        );
    }

    #[test]
    fn challenge_captcha_login_and_empty_pages() {
        let challenge = "<!DOCTYPE html><html><head><title>Please wait...</title></head>\
             <body><script>document.cookie='_wafchallengeid=abc';location.reload()</script>\
             </body></html>";
        assert_eq!(read_page(challenge), PageReading::Blocked("challenge page"));

        let captcha = "<html><body><div id=\"captcha-verify-container\" \
             class=\"captcha_verify_container\"><img class=\"captcha_verify_img\"></div>\
             </body></html>";
        assert_eq!(read_page(captcha), PageReading::Blocked("captcha page"));

        let login = "<html><head><title>Log in | TikTok</title></head><body></body></html>";
        assert_eq!(read_page(login), PageReading::Blocked("login page"));

        assert_eq!(read_page(""), PageReading::Blocked("empty body"));
        assert_eq!(read_page(" \r\n\t "), PageReading::Blocked("empty body"));
        assert_eq!(
            read_page("<html><body>Not here</body></html>"),
            PageReading::Blocked("no data script")
        );
        assert_eq!(
            read_page(r#"{"statusCode":0,"playCount":5}"#),
            PageReading::Blocked("no data script")
        );
    }

    #[test]
    fn next_data_status() {
        let page = |page_props: &str| {
            format!(
                "<script id=\"__NEXT_DATA__\" type=\"application/json\">\
                 {{\"props\":{{\"pageProps\":{page_props}}}}}</script>"
            )
        };
        let item = r#""itemInfo":{"itemStruct":{"stats":{"playCount":9}}}"#;
        assert_eq!(
            read_page(&page(&format!("{{{item}}}"))),
            PageReading::Count(9)
        );
        assert_eq!(
            read_page(&page(&format!(r#"{{"statusCode":10216,{item}}}"#))),
            PageReading::Private
        );
        assert_eq!(
            read_page(&page(r#"{"statusCode":10204}"#)),
            PageReading::NotFound
        );
        assert!(matches!(
            read_page("<script id=\"__NEXT_DATA__\">{\"props\":{}}</script>"),
            PageReading::Blocked(_)
        ));
    }

    #[test]
    fn script_tag_variants() {
        let json = r#"{"__DEFAULT_SCOPE__":{"webapp.video-detail":{"statusCode":0,"itemInfo":{"itemStruct":{"statsV2":{"playCount":"42"}}}}}}"#;
        let openings = [
            format!(r#"<script id="{DATA_SCRIPT_ID}" type="application/json">"#),
            format!(r#"<script type="application/json" id='{DATA_SCRIPT_ID}'>"#),
            format!(r#"<SCRIPT ID={DATA_SCRIPT_ID} TYPE=application/json>"#),
            format!(r#"<script data-note="a > b" nonce='x' id = "{DATA_SCRIPT_ID}">"#),
            format!("<script\n\ttype=\"application/json\"\n\tid=\"{DATA_SCRIPT_ID}\"\n>"),
            format!(r#"<script async id="{DATA_SCRIPT_ID}">"#),
        ];
        for opening in &openings {
            let page = format!("<html><body>{opening}{json}</script></body></html>");
            assert_eq!(read_page(&page), PageReading::Count(42), "{opening}");
            let upper_close = format!("{opening}{json}</SCRIPT >");
            assert_eq!(read_page(&upper_close), PageReading::Count(42), "{opening}");
        }

        // The id text elsewhere must not be taken for the element.
        let decoys = format!(
            "<script>var e = document.getElementById('{DATA_SCRIPT_ID}');</script>\
             <div data-for=\"{DATA_SCRIPT_ID}\">x</div>\
             <script id=\"{DATA_SCRIPT_ID}-old\">{{}}</script>\
             <scripts id=\"{DATA_SCRIPT_ID}\">{{}}</scripts>\
             <script id=\"{DATA_SCRIPT_ID}\">{json}</script>"
        );
        assert_eq!(read_page(&decoys), PageReading::Count(42));

        let only_decoys = format!("<p>{DATA_SCRIPT_ID}</p><div id=\"{DATA_SCRIPT_ID}\"></div>");
        assert_eq!(
            read_page(&only_decoys),
            PageReading::Blocked("no data script")
        );

        let unclosed_tag = format!("<script id=\"{DATA_SCRIPT_ID}\"");
        assert_eq!(
            read_page(&unclosed_tag),
            PageReading::Blocked("no data script")
        );

        let unclosed_quote = format!("<script id=\"{DATA_SCRIPT_ID}>{json}</script>");
        assert_eq!(
            read_page(&unclosed_quote),
            PageReading::Blocked("no data script")
        );
    }

    #[test]
    fn many_repeats_of_the_id_stay_fast() {
        // Without the bookkeeping in find_script this would take quadratic time.
        let page = format!("<script>{}</script>", DATA_SCRIPT_ID.repeat(50_000));
        assert_eq!(read_page(&page), PageReading::Blocked("no data script"));
        let page = format!("<script a='{}", DATA_SCRIPT_ID.repeat(50_000));
        assert_eq!(read_page(&page), PageReading::Blocked("no data script"));
    }

    /// Pieces of page markup, so generated pages reach the tag and JSON readers.
    const FRAGMENTS: &[&str] = &[
        "<script",
        "<SCRIPT",
        " id=",
        " id='",
        "\"",
        "'",
        ">",
        "</script>",
        "</",
        "<",
        " ",
        "=",
        "/",
        DATA_SCRIPT_ID,
        "__NEXT_DATA__",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"__DEFAULT_SCOPE__\"",
        "\"webapp.video-detail\"",
        "\"statusCode\"",
        "\"itemInfo\"",
        "\"itemStruct\"",
        "\"statsV2\"",
        "\"stats\"",
        "\"playCount\"",
        "\"props\"",
        "\"pageProps\"",
        "0",
        "10216",
        "-1",
        "1.5",
        "\"12\"",
        "null",
        "é",
        "\\",
        "\\u00",
    ];

    fn markup() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(FRAGMENTS), 0..40)
            .prop_map(|parts| parts.concat())
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            let _ = read_page(&text);
        }

        #[test]
        fn arbitrary_markup_never_panics(text in markup()) {
            let _ = read_page(&text);
        }

        #[test]
        fn truncated_real_page_never_panics(fraction in 0.0..=1.0f64) {
            let Some(page) = real_page() else { return Ok(()) };
            let mut cut = (page.len() as f64 * fraction) as usize;
            while !page.is_char_boundary(cut) {
                cut -= 1;
            }
            let head = page.get(..cut).unwrap_or_default();
            let tail = page.get(cut..).unwrap_or_default();
            let _ = read_page(head);
            let _ = read_page(tail);
        }
    }
}
