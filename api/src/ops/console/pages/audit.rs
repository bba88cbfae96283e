//! The audit log: every operator action, newest first (the operator API's
//! [`admin::audit_rows`]), console sign-ins and sign-outs among them.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use crate::ops::admin;
use crate::ops::console::html::{self, Nav};
use crate::ops::console::session::Session;
use crate::state::AppState;

/// Rows shown.
const SHOWN: usize = 200;

pub(crate) async fn page(State(state): State<AppState>, session: Session) -> Response {
    let rows = match admin::audit_rows(&state, SHOWN).await {
        Ok(rows) => rows,
        Err(err) => return html::failure(err, Some(&session)),
    };
    html::page(
        &session,
        Nav::Audit,
        "Audit log",
        html! {
            h1 { "Audit log" }
            p { "Every operator action, from the console or the operator API, newest first (the latest " (SHOWN) ")." }
            table {
                caption class="visually-hidden" { "Operator actions: when, who, what, on what, with what result" }
                thead {
                    tr {
                        th scope="col" { "When" }
                        th scope="col" { "Operator key" }
                        th scope="col" { "Action" }
                        th scope="col" { "Target" }
                        th scope="col" { "Result" }
                    }
                }
                tbody {
                    @for row in &rows {
                        tr {
                            td { (html::time(row.created_at)) }
                            td {
                                @match row.key_id {
                                    Some(key) => code { (key) },
                                    None => span class="muted" { "none (refused)" },
                                }
                            }
                            th scope="row" { (row.action) }
                            td class="target" { (row.target) }
                            td { (row.result) }
                        }
                    }
                }
            }
        },
    )
}
