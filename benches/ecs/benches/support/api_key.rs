//! An API key from a benchmark's server: log in as `admin`, create a key (an
//! API key avoids a session lookup per request).
#![allow(clippy::unwrap_used, dead_code)]

use serde_json::{Value as J, json};

/// A new API key `name` with `permissions`, from the server at `base`.
pub fn api_key(base: &str, admin_password: &str, name: &str, permissions: &[&str]) -> String {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let login: J = agent
        .post(format!("{base}/v1/auth/login"))
        .send_json(json!({"username": "admin", "password": admin_password}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let key: J = agent
        .post(format!("{base}/v1/admin/api-keys"))
        .header("authorization", &format!("Bearer {}", login["token"].as_str().unwrap()))
        .send_json(json!({"name": name, "permissions": permissions}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    key["key"].as_str().unwrap().to_string()
}
