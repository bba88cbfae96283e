//! The console's page shell (skip link, navigation, sign-out), its answers
//! (pages, live fragments, error pages) and how it writes times and
//! durations.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use super::session::{NoSession, Session, CSRF_FIELD};
use crate::http::error::ApiError;

/// The header a live fragment carries, so the script can tell a fragment
/// from a page it was redirected to (the sign-in page, once the session
/// ended) and stop.
pub(crate) const FRAGMENT_HEADER: &str = "x-console-fragment";

/// The pages of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Attention,
    DeadLetters,
    Webhooks,
    Payments,
    Audit,
}

impl Nav {
    const ALL: [Self; 6] = [
        Self::Overview,
        Self::Attention,
        Self::DeadLetters,
        Self::Webhooks,
        Self::Payments,
        Self::Audit,
    ];

    fn href(self) -> &'static str {
        match self {
            Self::Overview => "/console",
            Self::Attention => "/console/attention",
            Self::DeadLetters => "/console/dead-letters",
            Self::Webhooks => "/console/webhooks",
            Self::Payments => "/console/payments",
            Self::Audit => "/console/audit",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Overview => "Overview",
            Self::Attention => "Needs attention",
            Self::DeadLetters => "Dead letters",
            Self::Webhooks => "Webhooks",
            Self::Payments => "Payments",
            Self::Audit => "Audit log",
        }
    }
}

/// A whole page: `<main>` holds `content`; with a session, the header has
/// the navigation (`current` marked for screen readers) and sign-out.
pub(crate) fn document(
    status: StatusCode,
    title: &str,
    shell: Option<(&Session, Option<Nav>)>,
    content: Markup,
) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Payments console" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    span class="brand" { "Payments console" }
                    @if let Some((session, current)) = shell {
                        nav aria-label="Console" {
                            ul {
                                @for item in Nav::ALL {
                                    li {
                                        a href=(item.href())
                                            aria-current=[(Some(item) == current).then_some("page")] {
                                            (item.label())
                                        }
                                    }
                                }
                            }
                        }
                        form method="post" action="/console/sign-out" class="sign-out" {
                            (csrf_input(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" { (content) }
            }
        }
    };
    html_response(status, markup.into_string())
}

/// A page of a signed-in operator.
pub(crate) fn page(session: &Session, current: Nav, title: &str, content: Markup) -> Response {
    document(
        StatusCode::OK,
        title,
        Some((session, Some(current))),
        content,
    )
}

/// The hidden field with the session's CSRF token, in every form.
pub(crate) fn csrf_input(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf_token); }
}

/// A live region's fresh content (the script swaps it in).
pub(crate) fn fragment(content: Markup) -> Response {
    let mut response = html_response(StatusCode::OK, content.into_string());
    response
        .headers_mut()
        .insert(FRAGMENT_HEADER, HeaderValue::from_static("1"));
    response
}

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// A page saying what went wrong, and what to do.
pub(crate) fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    session: Option<&Session>,
) -> Response {
    let content = html! {
        h1 { (title) }
        p class="error" role="alert" { (message) }
        p { a href="/console" { "Back to the overview" } }
    };
    document(status, title, session.map(|s| (s, None)), content)
}

/// An operator API call that failed: its status and its public message
/// (the cause is logged, never shown).
pub(crate) fn failure(err: ApiError, session: Option<&Session>) -> Response {
    let (status, message) = err.into_status_and_message();
    let title = if status.is_server_error() {
        "Something failed"
    } else {
        "Not done"
    };
    error_page(status, title, &message, session)
}

/// A point in time, machine-readable in `datetime`, to the second in UTC.
pub(crate) fn time(at: DateTime<Utc>) -> Markup {
    html! {
        time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S UTC")) }
    }
}

/// How long ago `at` was, in words ("3 min ago").
pub(crate) fn ago(at: DateTime<Utc>) -> String {
    let secs = (Utc::now() - at).num_milliseconds() as f64 / 1000.0;
    format!("{} ago", duration(secs.max(0.0)))
}

/// A number of seconds in the unit that reads best.
pub(crate) fn duration(secs: f64) -> String {
    if secs < 1.0 {
        format!("{:.0} ms", secs * 1000.0)
    } else if secs < 90.0 {
        format!("{secs:.0} s")
    } else if secs < 90.0 * 60.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 48.0 * 3600.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.0} days", secs / 86_400.0)
    }
}

/// A payment's link to its console page.
pub(crate) fn payment_link(id: &str) -> Markup {
    html! { a href={ "/console/payments/" (id) } class="id" { (id) } }
}

/// The answer to a form that does not carry `session`'s CSRF token
/// ([`Session::csrf_matches`]); `None`: it does, go on. Nothing has been
/// done when it refuses.
pub(crate) fn csrf_refusal(session: &Session, form: &[(String, String)]) -> Option<Response> {
    if session.csrf_matches(form) {
        return None;
    }
    tracing::warn!(key_id = %session.key_id, "console form without its CSRF token refused");
    Some(error_page(
        StatusCode::FORBIDDEN,
        "Form refused",
        "This form did not carry this session's security token (it may be from an \
         older session, or from another site). Nothing was changed. Go back, reload \
         the page and try again.",
        Some(session),
    ))
}

/// No session: to the sign-in page; the sessions unreadable: an error page.
impl axum::response::IntoResponse for NoSession {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn => axum::response::Redirect::to("/console/sign-in").into_response(),
            Self::Unavailable(err) => failure(err, None),
        }
    }
}

/// A list the operator acts on in bulk (dead letters, dead webhook
/// deliveries): how many match, the first `shown` rows in a table whose
/// first column selects a row and whose last holds the row's own button,
/// and the buttons for the selected rows and for every match.
pub(crate) struct BulkList<'a> {
    /// How many match, as counted (at most `max`).
    pub count: usize,
    /// The most a bulk action takes: a count this large is "`max` or more".
    pub max: usize,
    /// Rows shown at most.
    pub shown: usize,
    /// What one row is, and many: `("dead letter", "dead letters")`.
    pub noun: (&'a str, &'a str),
    /// Which rows are shown when not all are: `"the oldest"`.
    pub first: &'a str,
    /// The table's class and its caption (for screen readers).
    pub class: &'a str,
    pub caption: &'a str,
    /// The columns between the select and the action column: a heading,
    /// and whether it holds numbers.
    pub columns: &'a [(&'a str, bool)],
    /// The rows, each with the select column first and the action last.
    pub rows: Markup,
    /// The bulk actions' verb: `"Replay"`.
    pub verb: &'a str,
}

impl BulkList<'_> {
    pub(crate) fn render(&self) -> Markup {
        let (one, many) = self.noun;
        let counted = if self.count >= self.max {
            format!("{} or more", self.max)
        } else {
            self.count.to_string()
        };
        html! {
            @if self.count == 0 {
                p class="count" { "No " (one) " matches." }
            } @else {
                p class="count" {
                    (counted)
                    @if self.count == 1 { " " (one) " matches" } @else { " " (many) " match" }
                    @if self.count > self.shown { "; " (self.first) " " (self.shown) " are shown" }
                    "."
                }
                table class=(self.class) {
                    caption class="visually-hidden" { (self.caption) }
                    thead {
                        tr {
                            th scope="col" { span class="visually-hidden" { "Select" } }
                            @for (heading, numeric) in self.columns {
                                th scope="col" class=[numeric.then_some("num")] { (heading) }
                            }
                            th scope="col" { span class="visually-hidden" { "Action" } }
                        }
                    }
                    tbody { (self.rows) }
                }
                div class="buttons" {
                    button type="submit" name="scope" value="selected" { (self.verb) " selected" }
                    " "
                    button type="submit" name="scope" value="all" {
                        (self.verb) " all " (counted) " matching"
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_reads_in_the_unit_that_fits() {
        assert_eq!(duration(0.25), "250 ms");
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(600.0), "10 min");
        assert_eq!(duration(3.0 * 3600.0), "3.0 h");
        assert_eq!(duration(5.0 * 86_400.0), "5 days");
    }
}
