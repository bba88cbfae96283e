//! Payments: find one by id or order id, and its page (its status history
//! with who and why, its operations, its events with every delivery
//! attempt), read with the operator API's [`payment_story`] functions.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Redirect, Response};
use common::domain::PaymentId;
use maud::{html, Markup};
use serde::Deserialize;

use crate::ops::console::html::{self, Nav};
use crate::ops::console::session::Session;
use crate::ops::payment_story::{self, PaymentStory};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub(crate) struct SearchQuery {
    q: Option<String>,
}

fn search_form(value: &str) -> Markup {
    html! {
        form method="get" action="/console/payments" role="search" class="filters"
            aria-label="Find a payment" {
            div {
                label for="q" { "Payment id or order id" }
                input id="q" name="q" type="search" size="44" spellcheck="false" value=(value)
                    placeholder="pay_… or an order id";
            }
            div class="buttons" { button type="submit" { "Find" } }
        }
    }
}

/// `GET /console/payments?q=…`: a payment id goes to its page; an order
/// id to its one payment, or a list when several merchants used it.
pub(crate) async fn search(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<SearchQuery>,
) -> Response {
    let q = query.q.as_deref().map(str::trim).unwrap_or("");
    if let Ok(id) = q.parse::<PaymentId>() {
        return Redirect::to(&format!("/console/payments/{id}")).into_response();
    }
    let found = if q.is_empty() {
        None
    } else {
        match payment_story::find_by_order_id(&state, q).await {
            Ok(found) => Some(found),
            Err(err) => return html::failure(err, Some(&session)),
        }
    };
    if let Some([id]) = found.as_ref().map(|found| found.data()) {
        return Redirect::to(&format!("/console/payments/{id}")).into_response();
    }
    html::page(
        &session,
        Nav::Payments,
        "Payments",
        html! {
            h1 { "Find a payment" }
            (search_form(q))
            @match &found {
                Some(found) if found.data().is_empty() => {
                    p role="status" { "No payment has the id or order id " code { (q) } "." }
                }
                Some(found) => {
                    h2 {
                        (found.data().len()) @if found.has_more() { "+" }
                        " payments with order id " code { (q) }
                    }
                    ul { @for id in found.data() { li { (html::payment_link(&id.to_string())) } } }
                }
                None => {}
            }
        },
    )
}

/// `GET /console/payments/{id}`.
pub(crate) async fn page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let not_found = |session: &Session| {
        html::error_page(
            StatusCode::NOT_FOUND,
            "No such payment",
            "No payment has this id.",
            Some(session),
        )
    };
    let Ok(id) = id.parse::<PaymentId>() else {
        return not_found(&session);
    };
    match payment_story::story(&state, id).await {
        Ok(Some(story)) => {
            let title = format!("Payment {}", story.payment.id);
            html::page(&session, Nav::Payments, &title, content(&story))
        }
        Ok(None) => not_found(&session),
        Err(err) => html::failure(err, Some(&session)),
    }
}

fn optional<T: maud::Render>(value: Option<T>) -> Markup {
    html! {
        @match value { Some(v) => (v), None => span class="muted" { "—" } }
    }
}

fn content(story: &PaymentStory) -> Markup {
    let p = &story.payment;
    html! {
        h1 { "Payment " code { (p.id) } }
        (search_form(""))
        section aria-labelledby="summary" {
            h2 id="summary" { "Summary" }
            dl class="summary" {
                dt { "Status" } dd class={ "status-" (p.status) } { strong { (p.status) } }
                dt { "Amount" } dd { (p.amount) " " (p.currency) " (minor units)" }
                dt { "Merchant" } dd { code { (p.merchant_id) } }
                dt { "Order id" } dd { (optional(p.order_id.as_deref())) }
                dt { "Description" } dd { (optional(p.description.as_deref())) }
                dt { "Accepted" } dd { (html::time(p.created_at)) }
                dt { "Finished" } dd { (optional(p.finished_at.map(html::time))) }
                dt { "Attempts" } dd { (p.attempts) }
                dt { "Last error" } dd { (optional(p.last_error.as_deref())) }
                dt { "Failure" } dd {
                    (optional(p.failure_code.as_deref()))
                    @if let Some(message) = &p.failure_message { ": " (message) }
                }
                @if let Some(since) = p.outcome_unknown_since {
                    dt { "Outcome unknown since" } dd { (html::time(since)) }
                }
                @if let Some(since) = p.held_at {
                    dt { "Held for an operator since" } dd { (html::time(since)) }
                }
                @if let Some(due) = p.due_at {
                    dt { "Next step due" } dd { (html::time(due)) }
                }
                dt { "Worker" } dd { (optional(p.claimed_by.as_deref())) }
            }
        }
        section aria-labelledby="history" {
            h2 id="history" { "Status history" }
            table {
                caption class="visually-hidden" { "Every status change: when, what, who, why" }
                thead {
                    tr {
                        th scope="col" { "When" }
                        th scope="col" { "Change" }
                        th scope="col" { "Who" }
                        th scope="col" { "Why" }
                    }
                }
                tbody {
                    @for change in &story.history {
                        tr {
                            td { (html::time(change.at)) }
                            th scope="row" {
                                @if let Some(from) = &change.from_status { (from) " → " }
                                (change.to_status)
                            }
                            td { code { (change.actor) } }
                            td { (optional(change.reason.as_deref())) }
                        }
                    }
                }
            }
        }
        section aria-labelledby="operations" {
            h2 id="operations" { "Operations" }
            @if story.operations.is_empty() {
                p { "No capture, void or refund." }
            } @else {
                table {
                    caption class="visually-hidden" { "Captures, voids and refunds, newest first" }
                    thead {
                        tr {
                            th scope="col" { "Kind" }
                            th scope="col" { "Status" }
                            th scope="col" class="num" { "Amount" }
                            th scope="col" { "Requested by" }
                            th scope="col" { "Reason" }
                            th scope="col" { "Created" }
                            th scope="col" { "Failure or last error" }
                        }
                    }
                    tbody {
                        @for op in &story.operations {
                            tr {
                                th scope="row" { (op.kind) }
                                td { (op.status) }
                                td class="num" { (op.amount) }
                                td { code { (op.requested_by) } }
                                td { (optional(op.reason.as_deref())) }
                                td { (html::time(op.created_at)) }
                                td {
                                    (optional(op.failure_message.as_deref().or(op.last_error.as_deref())))
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="events" {
            h2 id="events" { "Events and webhook deliveries" }
            @if story.events.is_empty() {
                p { "No event." }
            } @else {
                table {
                    caption class="visually-hidden" { "Events, each with its delivery attempts" }
                    thead {
                        tr {
                            th scope="col" { "Event" }
                            th scope="col" { "At" }
                            th scope="col" { "Endpoint" }
                            th scope="col" { "Delivery" }
                            th scope="col" { "Attempt" }
                            th scope="col" { "Outcome" }
                        }
                    }
                    tbody {
                        @for event in &story.events {
                            tr {
                                th scope="row" { (event.event_type) }
                                td { (html::time(event.event_at)) }
                                td { (optional(event.endpoint_url.as_deref())) }
                                td { (optional(event.delivery_status.as_deref())) }
                                td {
                                    @match (event.attempt, event.attempted_at) {
                                        (Some(n), Some(at)) => { "#" (n) ", " (html::time(at)) }
                                        _ => span class="muted" { "—" },
                                    }
                                }
                                td {
                                    (optional(event.outcome.as_deref()))
                                    @if let Some(code) = event.status_code { " (HTTP " (code) ")" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
