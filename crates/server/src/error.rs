//! API errors: a status and a JSON body `{"error": {"code", "message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429).
    pub retry_after: Option<u64>,
    /// Where writes go (a refusal by a replica or a fenced node).
    pub primary: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after: None, primary: None }
    }
    pub fn bad_request(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", m)
    }
    pub fn unauthorized(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
    }
    pub fn forbidden(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::FORBIDDEN, "forbidden", m)
    }
    pub fn not_found(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", m)
    }
    pub fn internal(m: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
    }
}

impl From<ecsdb::DbError> for ApiError {
    fn from(e: ecsdb::DbError) -> ApiError {
        use ecsdb::{DbError, EngineError};
        match &e {
            DbError::Engine(EngineError::NoSuchEntity(_)) => ApiError::not_found(e.to_string()),
            DbError::Engine(EngineError::MemoryLimit { .. }) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "memory_limit", e.to_string())
            }
            DbError::Engine(EngineError::TooLarge { .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "transaction_too_large", e.to_string())
            }
            DbError::Engine(EngineError::QueryLimit(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "result_too_large", e.to_string())
            }
            DbError::Engine(EngineError::QueryTimeout { .. }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "query_timeout",
                format!("{e} (server.query_timeout_ms); nothing was changed"),
            ),
            DbError::Busy(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()),
            DbError::ReadOnly(reason) => {
                let mut a = ApiError::new(StatusCode::CONFLICT, "read_only", format!("{reason}; nothing was changed"));
                a.primary = crate::replication::primary_named_in(reason);
                a
            }
            DbError::NotReplicated { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "replication_timeout",
                format!(
                    "{e}; the write is applied here, so treat its outcome as unknown (read it back before retrying)"
                ),
            ),
            DbError::Engine(EngineError::UniqueViolation { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "unique_violation", format!("{e}; nothing was changed"))
            }
            DbError::Engine(EngineError::CheckFailed { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "check_failed", format!("{e}; nothing was changed"))
            }
            DbError::Engine(EngineError::OutOfRange { .. }) => {
                ApiError::new(StatusCode::CONFLICT, "out_of_range", format!("{e}; nothing was changed"))
            }
            DbError::Engine(EngineError::Poisoned(_))
            | DbError::FailStop(_)
            | DbError::Sink(_)
            | DbError::Storage(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", e.to_string())
            }
            DbError::Engine(_) | DbError::Schema(_) => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        if let Some(p) = self.primary {
            body["error"]["primary"] = serde_json::Value::String(p);
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        r
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;
