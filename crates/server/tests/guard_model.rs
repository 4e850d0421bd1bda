//! Property test of the data API's guard: random data operations of every
//! kind, with random ids (system entities, user entities, nonsense), sent
//! with `ReadOnly` and `ReadWrite` credentials, never change a system row and
//! never return one.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use ecsdb::{Database, EntityId, World};
use ecsdb_server::config::ServerConfig;
use proptest::prelude::*;
use serde_json::{Value as J, json};

struct Fixture {
    base: String,
    db: Database,
    ro: String,
    rw: String,
    system_ids: Vec<u64>,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
    _running: ecsdb_server::Running,
}

fn call(f: &Fixture, method: &str, path: &str, token: &str, body: Option<&J>) -> (u16, String) {
    let url = format!("http://{}{path}", f.base);
    let auth = format!("Bearer {token}");
    let res = match method {
        "GET" => f.agent.get(&url).header("authorization", &auth).call(),
        "DELETE" => f.agent.delete(&url).header("authorization", &auth).call(),
        "PATCH" => f.agent.patch(&url).header("authorization", &auth).send_json(body.cloned().unwrap_or(json!({}))),
        _ => f.agent.post(&url).header("authorization", &auth).send_json(body.cloned().unwrap_or(json!({}))),
    };
    let mut res = res.unwrap();
    let status = res.status().as_u16();
    (status, res.body_mut().read_to_string().unwrap_or_default())
}

fn login(f_base: &str, agent: &ureq::Agent, user: &str, pw: &str) -> String {
    let mut r = agent
        .post(format!("http://{f_base}/v1/auth/login"))
        .send_json(json!({"username": user, "password": pw}))
        .unwrap();
    let v: J = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Every system row: (entity, table, values as text).
fn system_rows(w: &World) -> Vec<(EntityId, String, String)> {
    let mut out = Vec::new();
    for id in w.entities().iter() {
        for &t in w.tables_of(id).unwrap() {
            let name = &w.schema().table(t).name;
            if name.starts_with('_') {
                out.push((id, name.clone(), format!("{:?}", w.component_values(id, t).unwrap())));
            }
        }
    }
    out
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ServerConfig::default();
        c.server.bind = "127.0.0.1:0".into();
        c.db.database.data_dir = dir.path().join("data");
        c.auth.jwt_secret = Some("guard-model-secret-0123456789abcdef0123".into());
        c.rate_limit.max_requests = 0;
        c.rate_limit.max_unauthenticated = 0;
        let running = ecsdb_server::start(c, "admin-password-1").unwrap();
        let base = running.addr.to_string();
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
        let admin = login(&base, &agent, "admin", "admin-password-1");
        for (u, role) in [("ro", "ReadOnly"), ("rw", "ReadWrite")] {
            agent
                .post(format!("http://{base}/v1/admin/users"))
                .header("authorization", &format!("Bearer {admin}"))
                .send_json(json!({"username": u, "password": "password-123", "role": role}))
                .unwrap();
        }
        agent
            .post(format!("http://{base}/v1/admin/api-keys"))
            .header("authorization", &format!("Bearer {admin}"))
            .send_json(json!({"name": "k", "permissions": ["read"]}))
            .unwrap();
        let ro = login(&base, &agent, "ro", "password-123");
        let rw = login(&base, &agent, "rw", "password-123");
        let db = running.db.clone();
        let system_ids = system_rows(&db.read()).iter().map(|(id, _, _)| id.0).collect();
        Fixture { base, db, ro, rw, system_ids, agent, _dir: dir, _running: running }
    })
}

#[derive(Debug, Clone)]
enum Pick {
    System(usize),
    User(usize),
    Any(u64),
}

#[derive(Debug, Clone)]
enum Act {
    Op(&'static str, Pick, Pick),
    Get(Pick),
    Patch(Pick),
    Delete(Pick),
    Query(Pick),
    Stats,
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        3 => any::<usize>().prop_map(Pick::System),
        2 => any::<usize>().prop_map(Pick::User),
        1 => any::<u64>().prop_map(Pick::Any),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    let kinds = prop_oneof![
        Just("create"),
        Just("set"),
        Just("remove"),
        Just("remove_system"),
        Just("delete"),
        Just("link"),
        Just("unlink"),
        Just("create_system"),
    ];
    prop_oneof![
        4 => (kinds, pick(), pick()).prop_map(|(k, a, b)| Act::Op(k, a, b)),
        1 => pick().prop_map(Act::Get),
        1 => pick().prop_map(Act::Patch),
        1 => pick().prop_map(Act::Delete),
        1 => pick().prop_map(Act::Query),
        1 => Just(Act::Stats),
    ]
}

fn resolve(f: &Fixture, p: &Pick) -> u64 {
    match p {
        Pick::System(i) => f.system_ids[i % f.system_ids.len()],
        Pick::User(i) => {
            let users: Vec<u64> =
                f.db.read().entities().iter().map(|e| e.0).filter(|id| !f.system_ids.contains(id)).collect();
            if users.is_empty() { 1 } else { users[i % users.len()] }
        }
        Pick::Any(x) => *x,
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_data_operation_touches_or_returns_a_system_row(
        acts in proptest::collection::vec((act(), any::<bool>()), 1..12)
    ) {
        let f = fixture();
        let before = system_rows(&f.db.read());
        for (a, writer) in &acts {
            let token = if *writer { &f.rw } else { &f.ro };
            let mut sent = Vec::new();
            let mut r = |p: &Pick| {
                let id = resolve(f, p);
                sent.push(id);
                id
            };
            let (status, body) = match a {
                Act::Op(kind, x, y) => {
                    let (x, y) = (r(x), r(y));
                    let op = match *kind {
                        "create" => json!({"op": "create", "components": {"entities": {}}}),
                        "set" => json!({"op": "set", "id": x, "components": {"entities": {"version": 2}}}),
                        "remove" => json!({"op": "remove", "id": x, "table": "entities"}),
                        "remove_system" => json!({"op": "remove", "id": x, "table": "_sessions"}),
                        "delete" => json!({"op": "delete", "id": x}),
                        "link" => json!({"op": "link", "relation": "follows", "from": x, "to": y}),
                        "unlink" => json!({"op": "unlink", "relation": "follows", "from": x, "to": y}),
                        _ => json!({"op": "create", "components": {"_api_keys": {"name": "x"}}}),
                    };
                    call(f, "POST", "/v1/transactions", token, Some(&json!({"ops": [op]})))
                }
                Act::Get(x) => call(f, "GET", &format!("/v1/entities/{}", r(x)), token, None),
                Act::Patch(x) => call(
                    f,
                    "PATCH",
                    &format!("/v1/entities/{}", r(x)),
                    token,
                    Some(&json!({"components": {"entities": {"version": 3}}})),
                ),
                Act::Delete(x) => call(f, "DELETE", &format!("/v1/entities/{}", r(x)), token, None),
                Act::Query(x) => call(
                    f,
                    "POST",
                    "/v1/query",
                    token,
                    Some(&json!({"related": {"entity": r(x), "direction": "both", "depth": 2}})),
                ),
                Act::Stats => call(f, "POST", "/v1/query", token, Some(&json!({"limit": 100_000}))),
            };
            prop_assert!(status < 500, "{a:?}: {status} {body}");
            // An id the client sent may be echoed (in "does not exist");
            // any other system id in a response is a leak.
            // Whole numbers only: a user id can contain a system id's digits.
            let numbers: Vec<u64> = body
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|d| d.parse().ok())
                .collect();
            for id in f.system_ids.iter().filter(|id| !sent.contains(id)) {
                prop_assert!(!numbers.contains(id), "{a:?} returned system id {id}: {body}");
            }
            prop_assert_eq!(&system_rows(&f.db.read()), &before, "{:?} changed a system row", a);
        }
    }
}
