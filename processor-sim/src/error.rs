//! The simulator's error answers: one JSON envelope,
//! `{"error":{"code","message"}}` ([`ProcessorErrorBody`], shared with the
//! client), like a real gateway's, so clients parse failures the same way
//! whatever went wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::processor::{
    ProcessorError, ProcessorErrorBody, AMOUNT_EXCEEDS_CAPTURABLE_CODE,
    AMOUNT_EXCEEDS_REFUNDABLE_CODE, CHARGE_NOT_CAPTURABLE_CODE, CHARGE_NOT_REFUNDABLE_CODE,
    CHARGE_NOT_VOIDABLE_CODE, NO_SUCH_CHARGE_CODE, OPERATION_NOT_FOUND_CODE,
};

use crate::book::Refusal;

/// A request the simulator answers with an error status. Messages are written
/// for the client and never carry a card token.
#[derive(Debug)]
pub(crate) struct SimError {
    pub(crate) status: StatusCode,
    code: &'static str,
    message: String,
}

impl SimError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// The machine code, for log lines.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }

    /// `400`: the `Idempotency-Key` header is absent or empty.
    pub(crate) fn missing_idempotency_key() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "the Idempotency-Key header is required and must not be empty",
        )
    }

    /// `400`: a lookup without the `idempotency_key` query parameter, or with
    /// an empty one.
    pub(crate) fn missing_lookup_key() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "missing_idempotency_key",
            "the idempotency_key query parameter is required and must not be empty",
        )
    }

    /// `404`: no operation with this idempotency key was ever taken, so
    /// nothing happened and sending it again with the same key is safe.
    pub(crate) fn operation_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            OPERATION_NOT_FOUND_CODE,
            "no operation was taken with this idempotency key",
        )
    }

    /// The answer to a refusal by the charge book: `404` for an unknown
    /// charge, `409` when the charge's state rules the operation out, `400`
    /// when the amount is too large.
    pub(crate) fn refused(refusal: &Refusal) -> Self {
        match refusal {
            Refusal::NoSuchCharge => Self::new(
                StatusCode::NOT_FOUND,
                NO_SUCH_CHARGE_CODE,
                "no charge has this id",
            ),
            Refusal::NotCapturable { state } => Self::new(
                StatusCode::CONFLICT,
                CHARGE_NOT_CAPTURABLE_CODE,
                format!("only an uncaptured authorization can be captured; this charge is {state}"),
            ),
            Refusal::AmountExceedsCapturable { capturable } => Self::new(
                StatusCode::BAD_REQUEST,
                AMOUNT_EXCEEDS_CAPTURABLE_CODE,
                format!("amount exceeds the authorized amount of {capturable}"),
            ),
            Refusal::NotVoidable { state } => Self::new(
                StatusCode::CONFLICT,
                CHARGE_NOT_VOIDABLE_CODE,
                format!("only an uncaptured authorization can be voided; this charge is {state}"),
            ),
            Refusal::NotRefundable { state } => Self::new(
                StatusCode::CONFLICT,
                CHARGE_NOT_REFUNDABLE_CODE,
                format!("only a captured charge can be refunded; this charge is {state}"),
            ),
            Refusal::AmountExceedsRefundable { refundable } => Self::new(
                StatusCode::BAD_REQUEST,
                AMOUNT_EXCEEDS_REFUNDABLE_CODE,
                format!("amount exceeds what is still refundable: {refundable}"),
            ),
        }
    }

    /// `400`: the body is not the expected JSON.
    pub(crate) fn invalid_json(cause: &serde_json::Error) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON for this endpoint: {cause}"),
        )
    }

    /// `400`: the JSON parsed but a value is out of range.
    pub(crate) fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// `503`: the outage fault is on; nothing was done.
    pub(crate) fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "processor_unavailable",
            "the processor is unavailable; retry later with the same Idempotency-Key",
        )
    }

    /// `500`: the error fault fired; nothing was done.
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "processor_error",
            "the processor failed before acting; retry with the same Idempotency-Key",
        )
    }

    /// The envelope sent to the client.
    pub(crate) fn body(&self) -> ProcessorErrorBody {
        ProcessorErrorBody {
            error: ProcessorError {
                code: self.code.to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl IntoResponse for SimError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
