//! Dead letters: the jobs the workers gave up on, filtered by reason, age
//! and merchant; replay one, the selected ones, or every one that matches
//! (at most [`MAX_BULK`], and the notice says how many were touched); purge
//! them all after a confirmation page. The list is live.
//!
//! Every action is the operator API's own ([`admin::replay_dead_letters`],
//! [`admin::purge_dead_letters`]), which audits it; the page then redirects
//! (post, redirect, get) to the list with `?notice=<audit row id>`, and the
//! notice shows that row: what was done comes from the audit log, not from
//! a query string anyone could write.

use std::collections::HashSet;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::Form;
use common::dead_letters::{Age, DeadLetter, DeadLetterReason, Filter};
use common::domain::PaymentId;
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use crate::ops::admin::{self, Selection};
use crate::ops::console::html::{self, Nav};
use crate::ops::console::session::{field, Session};
use crate::state::AppState;

/// The most dead letters one bulk replay touches (and the most the page
/// counts): the operator API reads at most this many of the queue.
pub(crate) const MAX_BULK: usize = 1000;
/// Rows the page shows (the oldest).
const SHOWN: usize = 200;

/// The filters as the form sends them (strings: a wrong value is a message
/// on the page, not a rejected request).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFilters {
    reason: Option<String>,
    older_than_minutes: Option<String>,
    merchant: Option<String>,
    notice: Option<String>,
}

/// The filters, parsed.
#[derive(Debug, Default, Clone)]
struct Filters {
    reason: Option<DeadLetterReason>,
    older_than_minutes: Option<u64>,
    merchant: Option<Uuid>,
}

impl Filters {
    fn parse(
        reason: Option<&str>,
        older_than_minutes: Option<&str>,
        merchant: Option<&str>,
    ) -> Result<Self, String> {
        fn present(value: Option<&str>) -> Option<&str> {
            value.map(str::trim).filter(|v| !v.is_empty())
        }
        let reason = present(reason)
            .map(|r| r.parse::<DeadLetterReason>())
            .transpose()
            .map_err(|e| format!("Reason: {e}."))?;
        let older_than_minutes = present(older_than_minutes)
            .map(|m| m.parse::<u64>())
            .transpose()
            .map_err(|_| "Older than: a whole number of minutes.".to_owned())?;
        let merchant = present(merchant)
            .map(|m| m.parse::<Uuid>())
            .transpose()
            .map_err(|_| "Merchant: a merchant id (a UUID).".to_owned())?;
        let filters = Self {
            reason,
            older_than_minutes,
            merchant,
        };
        filters.age()?;
        Ok(filters)
    }

    fn from_form(form: &[(String, String)]) -> Result<Self, String> {
        Self::parse(
            field(form, "reason"),
            field(form, "older_than_minutes"),
            field(form, "merchant"),
        )
    }

    fn age(&self) -> Result<Option<Age>, String> {
        self.older_than_minutes
            .map(|minutes| Age::from_secs(minutes.saturating_mul(60)))
            .transpose()
            .map_err(|e| format!("Older than: {}", e.0))
    }

    fn selection(&self) -> Selection {
        Selection {
            reason: self.reason,
            older_than: self.age().ok().flatten(),
            merchant_id: self.merchant,
        }
    }

    /// The filters as a query string (for the live region's URL and the
    /// redirect after an action); empty without filters.
    fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(reason) = self.reason {
            query.append_pair("reason", reason.as_str());
        }
        if let Some(minutes) = self.older_than_minutes {
            query.append_pair("older_than_minutes", &minutes.to_string());
        }
        if let Some(merchant) = self.merchant {
            query.append_pair("merchant", &merchant.to_string());
        }
        query.finish()
    }

    /// In words, for the audit row's target.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(reason) = self.reason {
            parts.push(format!("reason {reason}"));
        }
        if let Some(minutes) = self.older_than_minutes {
            parts.push(format!("older than {minutes} min"));
        }
        if let Some(merchant) = self.merchant {
            parts.push(format!("merchant {merchant}"));
        }
        if parts.is_empty() {
            "no filter".to_owned()
        } else {
            parts.join(", ")
        }
    }

    fn hidden_inputs(&self) -> Markup {
        html! {
            @if let Some(reason) = self.reason {
                input type="hidden" name="reason" value=(reason.as_str());
            }
            @if let Some(minutes) = self.older_than_minutes {
                input type="hidden" name="older_than_minutes" value=(minutes);
            }
            @if let Some(merchant) = self.merchant {
                input type="hidden" name="merchant" value=(merchant);
            }
        }
    }
}

pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(raw): Query<RawFilters>,
) -> Response {
    let parsed = Filters::parse(
        raw.reason.as_deref(),
        raw.older_than_minutes.as_deref(),
        raw.merchant.as_deref(),
    );
    let notice = match raw.notice.as_deref().and_then(|n| n.parse::<i64>().ok()) {
        Some(id) => match admin::audit_row(&state, id).await {
            // Only the operator's own action: the notice answers what they
            // just did.
            Ok(row) => row.filter(|row| row.key_id == Some(session.key_id)),
            Err(err) => return html::failure(err, Some(&session)),
        },
        None => None,
    };
    let filters = parsed.clone().unwrap_or_default();
    let letters = match &parsed {
        Ok(filters) => {
            match admin::list_dead_letters(&state, &filters.selection(), MAX_BULK).await {
                Ok(letters) => letters,
                Err(err) => return html::failure(err, Some(&session)),
            }
        }
        Err(_) => Vec::new(),
    };
    let query = filters.query();
    let live = if query.is_empty() {
        "/console/live/dead-letters".to_owned()
    } else {
        format!("/console/live/dead-letters?{query}")
    };
    html::page(
        &session,
        Nav::DeadLetters,
        "Dead letters",
        html! {
            h1 { "Dead letters" }
            @if let Some(row) = notice {
                p class="notice" role="status" {
                    strong { (action_name(&row.action)) } ": " (row.result) "."
                    " (" (row.target) ", " (html::time(row.created_at)) ", in the "
                    a href="/console/audit" { "audit log" } ")"
                }
            }
            @if let Err(message) = &parsed {
                p class="error" role="alert" { (message) " Nothing is listed until the filter is fixed." }
            }
            (filter_form(&raw))
            form method="post" action="/console/dead-letters/replay" id="replay-form" {
                (html::csrf_input(&session))
                (filters.hidden_inputs())
                div data-live=(live) { (region(&letters)) }
            }
            p {
                a href="/console/dead-letters/purge" class="danger-link" { "Purge every dead letter…" }
                " (asks for confirmation)"
            }
        },
    )
}

pub(crate) async fn live(
    State(state): State<AppState>,
    session: Session,
    Query(raw): Query<RawFilters>,
) -> Response {
    let filters = match Filters::parse(
        raw.reason.as_deref(),
        raw.older_than_minutes.as_deref(),
        raw.merchant.as_deref(),
    ) {
        Ok(filters) => filters,
        Err(message) => {
            return html::error_page(
                StatusCode::BAD_REQUEST,
                "Wrong filter",
                &message,
                Some(&session),
            )
        }
    };
    match admin::list_dead_letters(&state, &filters.selection(), MAX_BULK).await {
        Ok(letters) => html::fragment(region(&letters)),
        Err(err) => html::failure(err, Some(&session)),
    }
}

fn action_name(action: &str) -> &str {
    match action {
        "dead_letters.replay" => "Replay done",
        "dead_letters.purge" => "Purge done",
        other => other,
    }
}

fn filter_form(raw: &RawFilters) -> Markup {
    let reason = raw.reason.as_deref().unwrap_or("");
    html! {
        form method="get" action="/console/dead-letters" class="filters" role="search"
            aria-label="Filter the dead letters" {
            div {
                label for="reason" { "Reason" }
                select id="reason" name="reason" {
                    option value="" selected[reason.is_empty()] { "Any reason" }
                    @for r in DeadLetterReason::ALL {
                        option value=(r.as_str()) selected[reason == r.as_str()] { (r.as_str()) }
                    }
                }
            }
            div {
                label for="older" { "Older than (minutes)" }
                input id="older" name="older_than_minutes" type="number" min="0" inputmode="numeric"
                    value=[raw.older_than_minutes.as_deref()];
            }
            div {
                label for="merchant" { "Merchant id" }
                input id="merchant" name="merchant" type="text" size="36" spellcheck="false"
                    value=[raw.merchant.as_deref()];
            }
            div class="buttons" {
                button type="submit" { "Filter" }
                " "
                a href="/console/dead-letters" { "Clear" }
            }
        }
    }
}

/// The live part: how many match, the rows, the bulk buttons.
fn region(letters: &[DeadLetter]) -> Markup {
    html::BulkList {
        count: letters.len(),
        max: MAX_BULK,
        shown: SHOWN,
        noun: ("dead letter", "dead letters"),
        first: "the oldest",
        class: "dead-letters",
        caption: "Dead letters, oldest first",
        columns: &[
            ("Payment", false),
            ("Reason", false),
            ("Attempts", true),
            ("Last error", false),
            ("Dead-lettered", false),
        ],
        rows: html! {
            @for letter in letters.iter().take(SHOWN) {
                (row(letter))
            }
        },
        verb: "Replay",
    }
    .render()
}

fn row(letter: &DeadLetter) -> Markup {
    let id = letter.payment_id.as_deref();
    html! {
        tr data-payment-id=[id] {
            td {
                @if let Some(id) = id {
                    input type="checkbox" name="payment_id" value=(id) id={ "select-" (id) }
                        aria-label={ "Select " (id) };
                }
            }
            th scope="row" {
                @match id {
                    Some(id) => (html::payment_link(id)),
                    None => span class="muted" { "undecodable message" },
                }
                @if let Some(merchant) = letter.merchant_id {
                    div class="muted" { "merchant " code { (merchant) } }
                }
            }
            td { (letter.reason.as_str()) }
            td class="num" {
                @match letter.attempts { Some(n) => (n), None => "—" }
            }
            td class="error-text" { (letter.last_error.as_deref().unwrap_or("—")) }
            td {
                @match letter.dead_lettered_at {
                    Some(at) => { (html::time(at)) br; span class="muted" { (html::ago(at)) } }
                    None => "—",
                }
            }
            td {
                @if let Some(id) = id {
                    button type="submit" name="one" value=(id) aria-label={ "Replay " (id) } {
                        "Replay"
                    }
                }
            }
        }
    }
}

/// `POST /console/dead-letters/replay`: the row's button (`one`), the
/// selected rows (`scope=selected`, the ticked `payment_id`s) or every
/// match of the filters (`scope=all`, at most [`MAX_BULK`]).
pub(crate) async fn replay(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = html::csrf_refusal(&session, &form) {
        return refused;
    }
    let not_done = |message: &str| {
        html::error_page(
            StatusCode::BAD_REQUEST,
            "Nothing replayed",
            message,
            Some(&session),
        )
    };
    let filters = match Filters::from_form(&form) {
        Ok(filters) => filters,
        Err(message) => return not_done(&message),
    };
    let parse = |value: &str| value.parse::<PaymentId>().ok();
    let (ids, target) = if let Some(one) = field(&form, "one") {
        let Some(id) = parse(one) else {
            return not_done("That is not a payment id.");
        };
        let ids = HashSet::from([id]);
        let target = admin::describe_ids(&ids);
        (ids, target)
    } else {
        match field(&form, "scope") {
            Some("selected") => {
                let ids: Option<HashSet<PaymentId>> = form
                    .iter()
                    .filter(|(key, _)| key == "payment_id")
                    .map(|(_, value)| parse(value))
                    .collect();
                let Some(ids) = ids.filter(|ids| !ids.is_empty() && ids.len() <= MAX_BULK) else {
                    return not_done("Select 1 to 1000 dead letters first (tick their boxes).");
                };
                let target = admin::describe_ids(&ids);
                (ids, target)
            }
            Some("all") => {
                let letters =
                    match admin::list_dead_letters(&state, &filters.selection(), MAX_BULK).await {
                        Ok(letters) => letters,
                        Err(err) => return html::failure(err, Some(&session)),
                    };
                let ids: HashSet<PaymentId> = letters
                    .iter()
                    .filter_map(|l| l.payment_id.as_deref().and_then(parse))
                    .collect();
                let target = format!(
                    "every match of {} ({}): {}",
                    filters.describe(),
                    ids.len(),
                    admin::describe_ids(&ids)
                );
                (ids, target)
            }
            _ => return not_done("Choose what to replay."),
        }
    };
    let filter = Filter {
        ids: Some(ids),
        reason: filters.reason,
        older_than: filters.age().ok().flatten(),
    };
    match admin::replay_dead_letters(&state, &session.operator(), &filter, &target).await {
        Ok(done) => after_action(done.audit_id, &filters),
        Err(err) => html::failure(err, Some(&session)),
    }
}

/// Back to the list, with the audit row of what was done as the notice.
fn after_action(audit_id: Option<i64>, filters: &Filters) -> Response {
    let mut query = filters.query();
    if let Some(id) = audit_id {
        if !query.is_empty() {
            query.push('&');
        }
        query.push_str(&format!("notice={id}"));
    }
    let to = if query.is_empty() {
        "/console/dead-letters".to_owned()
    } else {
        format!("/console/dead-letters?{query}")
    };
    Redirect::to(&to).into_response()
}

/// `GET /console/dead-letters/purge`: what a purge does, and the form that
/// does it.
pub(crate) async fn confirm_purge(State(state): State<AppState>, session: Session) -> Response {
    let letters = match admin::list_dead_letters(&state, &Selection::default(), MAX_BULK).await {
        Ok(letters) => letters,
        Err(err) => return html::failure(err, Some(&session)),
    };
    let count = if letters.len() >= MAX_BULK {
        format!("{MAX_BULK} or more")
    } else {
        letters.len().to_string()
    };
    html::page(
        &session,
        Nav::DeadLetters,
        "Purge the dead letters",
        html! {
            h1 { "Purge the dead letters" }
            p {
                "A purge discards " strong { "every" } " dead letter (" (count) " now), whatever "
                "the filters on the list. Their payments stay failed, and each payment's history "
                "says it was purged. This cannot be undone."
            }
            form method="post" action="/console/dead-letters/purge" {
                (html::csrf_input(&session))
                div class="confirm" {
                    input type="checkbox" id="confirm" name="confirm" value="yes" required;
                    label for="confirm" { "I understand: the dead letters are discarded for good." }
                }
                div class="buttons" {
                    button type="submit" class="danger" { "Purge every dead letter" }
                    " "
                    a href="/console/dead-letters" { "Cancel" }
                }
            }
        },
    )
}

/// `POST /console/dead-letters/purge`: only with the confirmation ticked.
pub(crate) async fn purge(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = html::csrf_refusal(&session, &form) {
        return refused;
    }
    if field(&form, "confirm") != Some("yes") {
        return html::error_page(
            StatusCode::BAD_REQUEST,
            "Nothing purged",
            "A purge cannot be undone, so it needs its confirmation ticked. Nothing was purged.",
            Some(&session),
        );
    }
    match admin::purge_dead_letters(&state, &session.operator()).await {
        Ok(done) => after_action(done.audit_id, &Filters::default()),
        Err(err) => html::failure(err, Some(&session)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_from_the_form_and_go_back_into_a_query() {
        let filters = Filters::parse(
            Some("attempts_exhausted"),
            Some("5"),
            Some("0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a"),
        )
        .expect("valid");
        assert_eq!(
            filters.query(),
            "reason=attempts_exhausted&older_than_minutes=5&merchant=0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a"
        );
        let empty = Filters::parse(Some(""), Some(" "), None).expect("empty is no filter");
        assert_eq!(empty.query(), "");
        assert_eq!(empty.describe(), "no filter");
    }

    #[test]
    fn a_wrong_filter_is_a_message_naming_it() {
        let err = Filters::parse(Some("bored"), None, None).expect_err("no such reason");
        assert!(err.starts_with("Reason:"), "{err}");
        let err = Filters::parse(None, Some("soon"), None).expect_err("not minutes");
        assert!(err.starts_with("Older than:"), "{err}");
        let err = Filters::parse(None, None, Some("acme")).expect_err("not a uuid");
        assert!(err.starts_with("Merchant:"), "{err}");
        let err = Filters::parse(None, Some("99999999999"), None).expect_err("too old");
        assert!(err.starts_with("Older than:"), "{err}");
    }
}
