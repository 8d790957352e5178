//! What every page shares: the frame around it ([`Chrome`]), rendering, and
//! turning stored values into short display text. Templates escape whatever
//! these return; nothing here produces markup.

use askama::Template;
use chrono::{DateTime, Utc};

use super::session::Session;

/// The frame around a page: title, navigation, and the CSRF token its
/// forms and script send back.
pub struct Chrome {
    pub title: String,
    pub csrf: String,
    pub operator: bool,
    /// Which navigation entry is current.
    pub section: &'static str,
}

impl Chrome {
    pub fn tenant(title: impl Into<String>, section: &'static str, session: &Session) -> Self {
        Self {
            title: title.into(),
            csrf: session.csrf.clone(),
            operator: false,
            section,
        }
    }

    pub fn operator(title: impl Into<String>, section: &'static str, session: &Session) -> Self {
        Self {
            operator: true,
            ..Self::tenant(title, section, session)
        }
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
pub struct ErrorPage {
    pub status: u16,
    pub message: String,
}

/// A template as HTML; a template that fails to render (it cannot, short of
/// a formatting error) becomes a plain line rather than a panic.
pub fn render(page: &impl Template) -> String {
    page.render().unwrap_or_else(|e| {
        tracing::error!(error = %e, "rendering a dashboard page");
        "internal error rendering this page".into()
    })
}

/// `2026-12-02 21:52:07` (UTC).
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn time_opt(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_default()
}

/// How long from `start` to `end` (or now), as `1.25 s` or `3 min 4 s`.
pub fn duration(start: DateTime<Utc>, end: Option<DateTime<Utc>>) -> String {
    let ms = (end.unwrap_or_else(Utc::now) - start)
        .num_milliseconds()
        .max(0);
    if ms < 60_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// The most of a payload a page shows.
pub const PREVIEW_BYTES: usize = 4096;

/// Bytes as text for a page: UTF-8 (invalid sequences replaced), cut at
/// [`PREVIEW_BYTES`] with a note saying how much was left out.
pub fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(PREVIEW_BYTES)];
    let mut text = String::from_utf8_lossy(shown).into_owned();
    if bytes.len() > PREVIEW_BYTES {
        text.push_str(&format!(
            "\n… {} more bytes not shown",
            bytes.len() - PREVIEW_BYTES
        ));
    }
    text
}

/// The last characters of an id, for tables (the link carries the rest).
/// Ids are time-ordered (v7): their first characters are a timestamp that
/// ids created together share, their last ones random.
pub fn short_id(id: impl std::fmt::Display) -> String {
    let id = id.to_string();
    format!("…{}", &id[id.len().saturating_sub(12)..])
}

/// An enum's wire name (`lease_expired`), as the API spells it.
pub fn name_of(value: &impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// `class: message`.
pub fn failure(f: &crate::model::Failure) -> String {
    format!("{}: {}", name_of(&f.class), f.message)
}

/// Tags as `key=value` pairs.
pub fn tags(tags: &std::collections::BTreeMap<String, String>) -> String {
    tags.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a suspended execution waits for, in one line: the condition and its
/// waitpoints, the signal names that count, the guest's reason, the timeout.
pub fn suspension(
    s: &crate::model::Suspension,
    timeout_at: Option<chrono::DateTime<chrono::Utc>>,
) -> String {
    let mut line = s.condition.summary();
    if !s.signal_names.is_empty() {
        line.push_str(&format!(" · signals named {}", s.signal_names.join(" or ")));
    }
    if let Some(reason) = &s.reason {
        line.push_str(&format!(" · reason {reason}"));
    }
    if let Some(at) = timeout_at {
        line.push_str(&format!(" · times out {}", time(at)));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_is_cut_and_says_so() {
        assert_eq!(preview(b"hi"), "hi");
        let long = vec![b'a'; PREVIEW_BYTES + 10];
        assert!(preview(&long).ends_with("… 10 more bytes not shown"));
        assert_eq!(preview(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn the_error_page_escapes_its_message() {
        let html = render(&ErrorPage {
            status: 404,
            message: "<script>alert(1)</script>".into(),
        });
        assert!(html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script>alert"));
    }
}
