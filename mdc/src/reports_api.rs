//! Reports for support and operations: a summary per group and time
//! bucket, and a CSV export of any size.
//!
//! Both walk the messages of their window page by page with the store's
//! cursor, so memory stays flat however many there are.

use std::collections::{BTreeMap, HashMap};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use mdc_core::ports::{ListFilter, Scope, SortOrder};
use mdc_core::{MessageRecord, Status};
use serde_json::{json, Value};

use crate::api::{only_known, parse_param, unavailable, unprocessable, ApiError, State};
use crate::auth::Caller;
use crate::messages_api::list_filter;

/// Records read per store call.
const PAGE: usize = 500;

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/reports/summary", web::get().to(summary));
}

/// What a summary can be grouped by.
const GROUPS: [&str; 6] = [
    "channel", "provider", "status", "type", "priority", "service",
];

fn group_value(record: &MessageRecord, by: &str) -> String {
    let message = &record.message;
    match by {
        "channel" => message.channel().to_string(),
        "provider" => record.provider.clone().unwrap_or_default(),
        "status" => record.status.to_string(),
        "type" => message.message_type.to_string(),
        "priority" => message.priority.to_string(),
        "service" => message.service.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::inert;

    #[test]
    fn formulas_are_made_inert_and_other_text_is_kept() {
        assert_eq!(inert("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(inert("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(inert("order-42"), "order-42");
        assert_eq!(inert(""), "");
    }
}

#[derive(Default)]
struct Tally {
    count: u64,
    delivered: u64,
    /// Delivered, failed or expired: what a delivery rate is out of.
    finished: u64,
    /// Milliseconds from submit to `delivered`.
    took: Option<Histogram<u64>>,
}

impl Tally {
    fn add(&mut self, record: &MessageRecord) {
        self.count += 1;
        if matches!(
            record.status,
            Status::Delivered | Status::Failed | Status::Expired
        ) {
            self.finished += 1;
        }
        if record.status == Status::Delivered {
            self.delivered += 1;
            let ms = (record.updated_at - record.message.created_at)
                .num_milliseconds()
                .max(0) as u64;
            let histogram = self
                .took
                .get_or_insert_with(|| Histogram::new(3).expect("3 significant figures"));
            histogram.saturating_record(ms);
        }
    }

    fn shown(&self) -> Value {
        let rate = (self.finished > 0).then(|| self.delivered as f64 / self.finished as f64);
        let took = self.took.as_ref().map(|h| {
            json!({
                "p50": h.value_at_quantile(0.50),
                "p95": h.value_at_quantile(0.95),
            })
        });
        json!({
            "count": self.count,
            "delivered": self.delivered,
            "finished": self.finished,
            "delivery_rate": rate,
            "time_to_delivered_ms": took,
        })
    }
}

fn time_param(query: &HashMap<String, String>, key: &str) -> Result<DateTime<Utc>, ApiError> {
    parse_param::<DateTime<Utc>>(query, key, "an RFC 3339 time")?
        .ok_or_else(|| unprocessable(key, "required", format!("{key} is required (RFC 3339)")))
}

/// `GET /v1/reports/summary?from=&to=&group_by=&interval=`: per time bucket
/// (of `interval`, from `from`; one bucket without it) and group, the
/// messages created, those delivered, the delivery rate (delivered out of
/// delivered, failed and expired), and time to delivered p50/p95.
#[utoipa::path(get, path = "/v1/reports/summary", tag = "reports", params(("from" = String, Query, description = "RFC 3339"), ("to" = String, Query, description = "RFC 3339"), ("group_by" = Option<String>, Query, description = "channel,provider,status,type,priority,service"), ("interval" = Option<String>, Query, description = "e.g. 1h; at least 1m"), ("service" = Option<String>, Query)), responses((status = 200, description = "Counts per bucket and group", body = crate::openapi::Summary), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
async fn summary(
    caller: Caller,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    const KNOWN: [&str; 5] = ["from", "to", "group_by", "interval", "service"];
    only_known(&query, &KNOWN)?;
    let (from, to) = (time_param(&query, "from")?, time_param(&query, "to")?);
    if from >= to {
        return Err(unprocessable("to", "range", "must be after from"));
    }
    let group_by: Vec<String> = query
        .get("group_by")
        .map(|g| {
            g.split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(bad) = group_by.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        return Err(unprocessable(
            "group_by",
            "one_of",
            format!("cannot group by {bad:?}; use {}", GROUPS.join(", ")),
        ));
    }
    let interval = match query.get("interval") {
        Some(text) => {
            let interval = humantime::parse_duration(text).map_err(|e| {
                unprocessable("interval", "duration", format!("not a duration: {e}"))
            })?;
            if interval < std::time::Duration::from_secs(60) {
                return Err(unprocessable("interval", "range", "at least 1m"));
            }
            let buckets = (to - from).num_seconds() as u64 / interval.as_secs().max(1);
            if buckets > 10_000 {
                return Err(unprocessable(
                    "interval",
                    "range",
                    "more than 10,000 buckets; widen the interval",
                ));
            }
            Some(chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::MAX))
        }
        None => None,
    };
    let mut scope = HashMap::new();
    if let Some(service) = query.get("service") {
        scope.insert("service".to_owned(), service.clone());
    }
    let mut filter = list_filter(&caller, &scope, true)?;
    filter.created_after = Some(from);
    filter.created_before = Some(to);
    filter.sort = SortOrder::CreatedAsc;
    filter.limit = PAGE;

    let mut tallies: BTreeMap<(i64, Vec<String>), Tally> = BTreeMap::new();
    let mut total = Tally::default();
    loop {
        let page = state.store.list(&filter).await.map_err(unavailable)?;
        for record in &page {
            let bucket = match interval {
                Some(interval) => {
                    let n = (record.message.created_at - from).num_milliseconds()
                        / interval.num_milliseconds().max(1);
                    from.timestamp_millis() + n * interval.num_milliseconds()
                }
                None => from.timestamp_millis(),
            };
            let key: Vec<String> = group_by.iter().map(|g| group_value(record, g)).collect();
            tallies.entry((bucket, key)).or_default().add(record);
            total.add(record);
        }
        match page.last() {
            Some(last) if page.len() == PAGE => filter.after = Some(filter.sort.key(last)),
            _ => break,
        }
    }
    let groups: Vec<Value> = tallies
        .iter()
        .map(|((bucket, key), tally)| {
            let mut shown = tally.shown();
            let start = DateTime::<Utc>::from_timestamp_millis(*bucket).unwrap_or(from);
            shown["bucket"] = json!(start);
            for (name, value) in group_by.iter().zip(key) {
                shown[name] = json!(value);
            }
            shown
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "from": from,
        "to": to,
        "interval": query.get("interval"),
        "group_by": group_by,
        "groups": groups,
        "total": total.shown(),
    })))
}

const CSV_COLUMNS: [&str; 13] = [
    "id",
    "created_at",
    "updated_at",
    "status",
    "channel",
    "priority",
    "type",
    "service",
    "to",
    "provider",
    "provider_message_id",
    "attempts",
    "reference",
];

/// A cell a spreadsheet would not run as a formula: text that a caller or a
/// vendor chose and that starts with `=`, `+`, `-`, `@`, a tab or a carriage
/// return gets a leading `'`.
fn inert(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

fn csv_rows(records: &[MessageRecord], header: bool, pii: bool) -> Result<Vec<u8>, csv::Error> {
    let mut out = csv::Writer::from_writer(Vec::new());
    if header {
        out.write_record(CSV_COLUMNS)?;
    }
    for record in records {
        let message = &record.message;
        let to = if pii {
            message.to.clone()
        } else {
            mdc_core::mask::recipient(&message.to)
        };
        out.write_record([
            message.id.as_str(),
            &message.created_at.to_rfc3339(),
            &record.updated_at.to_rfc3339(),
            record.status.as_str(),
            message.channel().as_str(),
            message.priority.as_str(),
            message.message_type.as_str(),
            message.service.as_deref().unwrap_or_default(),
            &to,
            record.provider.as_deref().unwrap_or_default(),
            &inert(record.provider_message_id.as_deref().unwrap_or_default()),
            &record.attempts.to_string(),
            &inert(message.reference.as_deref().unwrap_or_default()),
        ])?;
    }
    out.into_inner().map_err(|e| e.into_error().into())
}

/// `GET /v1/messages/export.csv`: the messages of the list filters
/// (`limit` caps the rows; none: all), streamed page by page, oldest first
/// unless `sort` says otherwise; recipients masked without `read:pii`,
/// bodies never.
#[utoipa::path(get, path = "/v1/messages/export.csv", tag = "reports", params(("status" = Option<String>, Query, description = "accepted, queued, sending, sent, delivered, failed, expired, rejected, cancelled"), ("channel" = Option<String>, Query, description = "sms, email, push"), ("provider" = Option<String>, Query), ("type" = Option<String>, Query, description = "otp, transactional, marketing"), ("priority" = Option<String>, Query, description = "critical, normal, bulk"), ("to" = Option<String>, Query, description = "Recipient, normalised as at submit"), ("reference" = Option<String>, Query), ("service" = Option<String>, Query, description = "Admin keys: another service's messages"), ("created_after" = Option<String>, Query, description = "RFC 3339"), ("created_before" = Option<String>, Query, description = "RFC 3339"), ("sort" = Option<String>, Query, description = "created_at, -created_at (default), updated_at, -updated_at"), ("limit" = Option<u32>, Query, description = "1-500, default 100")), responses((status = 200, description = "Every match as CSV, streamed", content_type = "text/csv", body = String), (status = 422, description = "A field breaks a rule; `field` names it", body = crate::openapi::ErrorBody), (status = 401, description = "No API key, or an unknown or revoked one", body = crate::openapi::ErrorBody), (status = 403, description = "The key lacks the scope", body = crate::openapi::ErrorBody), (status = 503, description = "A backend is unavailable; nothing changed, retry", body = crate::openapi::ErrorBody)))]
pub async fn export_csv(
    caller: Caller,
    query: web::Query<HashMap<String, String>>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Scope::Read)?;
    let mut query = query.into_inner();
    query
        .entry("sort".to_owned())
        .or_insert_with(|| "created_at".to_owned());
    if query.contains_key("cursor") {
        return Err(unprocessable("cursor", "query", "an export is not paged"));
    }
    let filter = list_filter(&caller, &query, false)?;
    let pii = caller.sees_pii();
    // Fail before the 200 if the store is down.
    let first = state
        .store
        .list(&ListFilter {
            limit: filter.limit.min(PAGE),
            ..filter.clone()
        })
        .await
        .map_err(unavailable)?;
    struct Walk {
        state: web::Data<State>,
        filter: ListFilter,
        left: usize,
        page: Option<Vec<MessageRecord>>,
        header: bool,
    }
    let walk = Walk {
        state,
        left: filter.limit,
        filter,
        page: Some(first),
        header: true,
    };
    let stream = futures::stream::try_unfold(walk, move |mut walk| async move {
        let page = match walk.page.take() {
            Some(page) => page,
            None if walk.left == 0 => return Ok(None),
            None => walk
                .state
                .store
                .list(&ListFilter {
                    limit: walk.left.min(PAGE),
                    ..walk.filter.clone()
                })
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "CSV export stopped: the store failed");
                    actix_web::error::ErrorServiceUnavailable("store unavailable")
                })?,
        };
        if page.is_empty() && !walk.header {
            return Ok(None);
        }
        let full = page.len() == walk.left.min(PAGE);
        walk.left -= page.len();
        if let Some(last) = page.last() {
            walk.filter.after = Some(walk.filter.sort.key(last));
        }
        if !full {
            walk.left = 0;
        }
        let bytes = csv_rows(&page, walk.header, pii)
            .map_err(|e| actix_web::error::ErrorInternalServerError(e.to_string()))?;
        walk.header = false;
        Ok::<_, actix_web::Error>(Some((web::Bytes::from(bytes), walk)))
    });
    Ok(HttpResponse::build(StatusCode::OK)
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            "attachment; filename=\"messages.csv\"",
        ))
        .streaming(stream))
}
