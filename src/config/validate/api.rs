//! `$.api`: the plant's batch API (finish reports, new batches, confirmations): its URLs,
//! timing, body templates and field names.

use super::{validate_url, Check};
use crate::config::raw::RawApi;
use crate::config::{default_confirm_body, default_finish_body, Api};
use std::time::Duration;

pub(super) fn validate_api(c: &mut Check, r: &RawApi) -> Api {
    let mut url = |field: &str, v: &Option<String>| {
        let v = v.clone().filter(|s| !s.is_empty());
        if let Some(u) = &v {
            validate_url(c, &format!("$.api.{field}"), u);
        }
        v
    };
    let batch_url = url("batch_url", &r.batch_url);
    let trigger_url = url("trigger_url", &r.trigger_url);
    let strings_url = url("strings_url", &r.strings_url);
    let strings_conf_url = url("strings_conf_url", &r.strings_conf_url);
    let fields = r.fields.clone().unwrap_or_default();
    let name = |c: &mut Check, field: &str, v: Option<String>, default: &str| match v {
        Some(s) if s.is_empty() => {
            c.err(format!("$.api.fields.{field}"), "must not be empty");
            default.to_string()
        }
        Some(s) => s,
        None => default.to_string(),
    };
    let field_machine = name(c, "machine", fields.machine, "machine");
    let field_batch = name(c, "batch", fields.batch, "batch");
    let field_id = name(c, "id", fields.id, "id");
    for (field, v) in [
        ("finish_body", &r.finish_body),
        ("confirm_body", &r.confirm_body),
    ] {
        if v.as_ref().is_some_and(|v| !v.is_object()) {
            c.err(
                format!("$.api.{field}"),
                "must be a JSON object (a template)",
            );
        }
    }
    Api {
        finish_body: r.finish_body.clone().unwrap_or_else(default_finish_body),
        confirm_body: r.confirm_body.clone().unwrap_or_else(default_confirm_body),
        field_machine,
        field_batch,
        field_id,
        batch_url,
        trigger_url,
        strings_url,
        strings_conf_url,
        poll_interval: c.secs(
            "$.api.poll_interval_s",
            r.poll_interval_s,
            Duration::from_secs(10),
        ),
        timeout: c.secs("$.api.timeout_s", r.timeout_s, Duration::from_secs(5)),
    }
}
