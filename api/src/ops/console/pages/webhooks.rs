//! Webhooks: the deliveries the worker gave up on (`dead`), every
//! merchant's, filtered by merchant and endpoint; send one again, the
//! selected ones, or every one that matches (at most
//! [`dead_deliveries::MAX_BULK`], and the notice says how many). The list
//! is live.
//!
//! Every action is the operator API's own
//! ([`dead_deliveries::redeliver_dead`], which audits it); then, as on the
//! dead letters' page, post, redirect, get: the list with
//! `?notice=<audit row id>`, the notice showing that row.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Redirect, Response};
use axum::Form;
use common::domain::EndpointId;
use maud::{html, Markup};
use serde::Deserialize;
use uuid::Uuid;

use crate::ops::admin;
use crate::ops::console::html::{self, Nav};
use crate::ops::console::session::{field, Session};
use crate::ops::dead_deliveries::{self, DeadDelivery, Scope, MAX_BULK};
use crate::state::AppState;

/// Rows the page shows (the longest dead).
const SHOWN: usize = 200;

/// The filters as the form sends them (strings: a wrong value is a message
/// on the page, not a rejected request).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFilters {
    merchant: Option<String>,
    endpoint: Option<String>,
    notice: Option<String>,
}

/// The filters, parsed.
#[derive(Debug, Default, Clone, Copy)]
struct Filters {
    merchant: Option<Uuid>,
    endpoint: Option<EndpointId>,
}

impl Filters {
    fn parse(merchant: Option<&str>, endpoint: Option<&str>) -> Result<Self, String> {
        fn present(value: Option<&str>) -> Option<&str> {
            value.map(str::trim).filter(|v| !v.is_empty())
        }
        let merchant = present(merchant)
            .map(|m| m.parse::<Uuid>())
            .transpose()
            .map_err(|_| "Merchant: a merchant id (a UUID).".to_owned())?;
        let endpoint = present(endpoint)
            .map(|e| e.parse::<EndpointId>())
            .transpose()
            .map_err(|_| "Endpoint: an endpoint id (we_…).".to_owned())?;
        Ok(Self { merchant, endpoint })
    }

    fn from_form(form: &[(String, String)]) -> Result<Self, String> {
        Self::parse(field(form, "merchant"), field(form, "endpoint"))
    }

    fn scope(self) -> Scope {
        Scope {
            merchant_id: self.merchant,
            endpoint_id: self.endpoint.map(|e| e.0),
        }
    }

    /// The filters as a query string (for the live region's URL and the
    /// redirect after an action); empty without filters.
    fn query(self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(merchant) = self.merchant {
            query.append_pair("merchant", &merchant.to_string());
        }
        if let Some(endpoint) = self.endpoint {
            query.append_pair("endpoint", &endpoint.to_string());
        }
        query.finish()
    }

    fn hidden_inputs(self) -> Markup {
        html! {
            @if let Some(merchant) = self.merchant {
                input type="hidden" name="merchant" value=(merchant);
            }
            @if let Some(endpoint) = self.endpoint {
                input type="hidden" name="endpoint" value=(endpoint);
            }
        }
    }
}

fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    Query(raw): Query<RawFilters>,
) -> Response {
    let parsed = Filters::parse(raw.merchant.as_deref(), raw.endpoint.as_deref());
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
    let dead = match &parsed {
        Ok(filters) => match dead_deliveries::list_dead(&state, filters.scope(), MAX_BULK).await {
            Ok(dead) => dead,
            Err(err) => return html::failure(err, Some(&session)),
        },
        Err(_) => Vec::new(),
    };
    let live = with_query("/console/live/webhooks", &filters.query());
    html::page(
        &session,
        Nav::Webhooks,
        "Webhooks",
        html! {
            h1 { "Webhooks" }
            p class="hint" {
                "Deliveries the worker gave up on, and not sent again since. Redelivering one "
                "sends its event to its endpoint again, as the merchant's "
                code { "POST /v1/events/{id}/redeliver" } " does: the same body and "
                code { "webhook-id" } ", a fresh retry schedule."
            }
            @if let Some(row) = notice {
                p class="notice" role="status" {
                    strong { "Redelivery done" } ": " (row.result) "."
                    " (" (row.target) ", " (html::time(row.created_at)) ", in the "
                    a href="/console/audit" { "audit log" } ")"
                }
            }
            @if let Err(message) = &parsed {
                p class="error" role="alert" { (message) " Nothing is listed until the filter is fixed." }
            }
            (filter_form(&raw))
            form method="post" action="/console/webhooks/redeliver" id="redeliver-form" {
                (html::csrf_input(&session))
                (filters.hidden_inputs())
                div data-live=(live) { (region(&dead)) }
            }
        },
    )
}

pub(crate) async fn live(
    State(state): State<AppState>,
    session: Session,
    Query(raw): Query<RawFilters>,
) -> Response {
    let filters = match Filters::parse(raw.merchant.as_deref(), raw.endpoint.as_deref()) {
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
    match dead_deliveries::list_dead(&state, filters.scope(), MAX_BULK).await {
        Ok(dead) => html::fragment(region(&dead)),
        Err(err) => html::failure(err, Some(&session)),
    }
}

fn filter_form(raw: &RawFilters) -> Markup {
    html! {
        form method="get" action="/console/webhooks" class="filters" role="search"
            aria-label="Filter the dead deliveries" {
            div {
                label for="merchant" { "Merchant id" }
                input id="merchant" name="merchant" type="text" size="36" spellcheck="false"
                    value=[raw.merchant.as_deref()];
            }
            div {
                label for="endpoint" { "Endpoint id" }
                input id="endpoint" name="endpoint" type="text" size="40" spellcheck="false"
                    placeholder="we_…" value=[raw.endpoint.as_deref()];
            }
            div class="buttons" {
                button type="submit" { "Filter" }
                " "
                a href="/console/webhooks" { "Clear" }
            }
        }
    }
}

/// The live part: how many match, the rows, the bulk buttons.
fn region(dead: &[DeadDelivery]) -> Markup {
    html::BulkList {
        count: dead.len(),
        max: MAX_BULK,
        shown: SHOWN,
        noun: ("dead delivery", "dead deliveries"),
        first: "the longest dead",
        class: "dead-deliveries",
        caption: "Dead webhook deliveries, the longest dead first",
        columns: &[
            ("Event", false),
            ("Endpoint", false),
            ("Attempts", true),
            ("Last attempt", false),
            ("Dead since", false),
        ],
        rows: html! {
            @for delivery in dead.iter().take(SHOWN) {
                (row(delivery))
            }
        },
        verb: "Redeliver",
    }
    .render()
}

fn row(delivery: &DeadDelivery) -> Markup {
    let id = delivery.id.to_string();
    html! {
        tr data-delivery-id=(id) data-event-id=(delivery.event_id) {
            td {
                input type="checkbox" name="delivery_id" value=(id) id={ "select-" (id) }
                    aria-label={ "Select the delivery of " (delivery.event_id) };
            }
            th scope="row" {
                code { (delivery.event_type) }
                div class="muted id" { (delivery.event_id) }
                @if let Some(payment) = &delivery.payment_id {
                    div { (html::payment_link(payment)) }
                }
                div class="muted" { "merchant " code { (delivery.merchant_id) } }
            }
            td class="url" {
                span class="id" { (delivery.endpoint_url) }
                div class="muted id" { (delivery.endpoint_id) }
                @if delivery.endpoint_status == common::webhooks::EndpointStatus::Disabled {
                    div class="error-text" { "disabled: nothing is sent to it" }
                }
            }
            td class="num" { (delivery.attempts) }
            td class="error-text" {
                @match delivery.last_outcome {
                    Some(outcome) => {
                        (outcome.as_str())
                        @if let Some(code) = delivery.last_status_code { " (HTTP " (code) ")" }
                        @if let Some(error) = &delivery.last_error {
                            div class="muted" { (error) }
                        }
                    }
                    None => "—",
                }
            }
            td {
                (html::time(delivery.dead_since)) br;
                span class="muted" { (html::ago(delivery.dead_since)) }
            }
            td {
                button type="submit" name="one" value=(id)
                    aria-label={ "Redeliver " (delivery.event_id) " to " (delivery.endpoint_url) } {
                    "Redeliver"
                }
            }
        }
    }
}

/// `POST /console/webhooks/redeliver`: the row's button (`one`), the
/// selected rows (`scope=selected`, the ticked `delivery_id`s) or every
/// match of the filters (`scope=all`, at most [`MAX_BULK`]).
pub(crate) async fn redeliver(
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
            "Nothing redelivered",
            message,
            Some(&session),
        )
    };
    let filters = match Filters::from_form(&form) {
        Ok(filters) => filters,
        Err(message) => return not_done(&message),
    };
    let parse = |value: &str| value.parse::<Uuid>().ok();
    let ids = if let Some(one) = field(&form, "one") {
        let Some(id) = parse(one) else {
            return not_done("That is not a delivery id.");
        };
        Some(vec![id])
    } else {
        match field(&form, "scope") {
            Some("selected") => {
                let ids: Option<Vec<Uuid>> = form
                    .iter()
                    .filter(|(key, _)| key == "delivery_id")
                    .map(|(_, value)| parse(value))
                    .collect();
                let Some(ids) = ids.filter(|ids| !ids.is_empty() && ids.len() <= MAX_BULK) else {
                    return not_done("Select 1 to 1000 dead deliveries first (tick their boxes).");
                };
                Some(ids)
            }
            Some("all") => None,
            _ => return not_done("Choose what to redeliver."),
        }
    };
    let target = match &ids {
        Some(ids) => dead_deliveries::describe_ids(ids),
        None => format!("every match of {}", filters.scope().describe()),
    };
    let operator = session.operator();
    match dead_deliveries::redeliver_dead(
        &state,
        &operator,
        filters.scope(),
        ids.as_deref(),
        &target,
    )
    .await
    {
        Ok(done) => {
            let mut query = filters.query();
            if let Some(id) = done.audit_id {
                if !query.is_empty() {
                    query.push('&');
                }
                query.push_str(&format!("notice={id}"));
            }
            Redirect::to(&with_query("/console/webhooks", &query)).into_response()
        }
        Err(err) => html::failure(err, Some(&session)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_from_the_form_and_go_back_into_a_query() {
        let filters = Filters::parse(
            Some("0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a"),
            Some("we_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2b"),
        )
        .expect("valid");
        assert_eq!(
            filters.query(),
            "merchant=0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2a&endpoint=we_0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2b"
        );
        let empty = Filters::parse(Some(" "), None).expect("empty is no filter");
        assert_eq!(empty.query(), "");
        assert_eq!(empty.scope().describe(), "no filter");
    }

    #[test]
    fn a_wrong_filter_is_a_message_naming_it() {
        let err = Filters::parse(Some("acme"), None).expect_err("not a uuid");
        assert!(err.starts_with("Merchant:"), "{err}");
        let err = Filters::parse(None, Some("0192d4a0-7c1e-7cc2-9c35-3f2d6c1c9b2b"))
            .expect_err("no we_ prefix");
        assert!(err.starts_with("Endpoint:"), "{err}");
    }
}
