//! Sessions are recorded only for the password that was checked: a login
//! racing a password change cannot leave a session behind.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ecsdb::{Database, Schema};
use ecsdb_server::system::{self, Role};

fn db() -> Database {
    let schema = Schema::with_system(ecsdb::EXAMPLE_SCHEMA, system::SYSTEM_SCHEMA).unwrap();
    Database::builder().schema(Arc::new(schema)).build().unwrap()
}

#[test]
fn a_session_for_a_changed_password_is_refused() {
    let db = db();
    let old = "argon2-hash-old";
    system::insert_user(&db, "ana", old, Role::ReadWrite).unwrap();
    let user = system::find_user(&db.read(), "ana").unwrap().unwrap();
    system::insert_session(&db, "s1", "ana", old, u64::MAX).unwrap();
    // The password changes (ending s1) while a second login, checked against
    // the old hash, is still on its way.
    system::set_password_ending_sessions(&db, user.id, "ana", "argon2-hash-new").unwrap();
    assert!(system::find_session(&db.read(), "s1").unwrap().is_none());
    let late = system::insert_session(&db, "s2", "ana", old, u64::MAX).unwrap_err();
    assert_eq!(late.status, 401, "{}", late.message);
    assert!(system::find_session(&db.read(), "s2").unwrap().is_none());
    // With the current hash it works.
    system::insert_session(&db, "s3", "ana", "argon2-hash-new", u64::MAX).unwrap();
    assert!(system::find_session(&db.read(), "s3").unwrap().is_some());
}

/// Names are unique without regard to case, checked in the inserting commit.
#[test]
fn names_differing_in_case_are_one_name() {
    let db = db();
    system::insert_user(&db, "Ana", "h", Role::ReadOnly).unwrap();
    let e = system::insert_user(&db, "aNA", "h", Role::Admin).unwrap_err();
    assert_eq!(e.status, 409, "{}", e.message);
    system::insert_api_key(&db, "Svc", "k1", system::Perms(1)).unwrap();
    assert_eq!(system::insert_api_key(&db, "svc", "k2", system::Perms(1)).unwrap_err().status, 409);
}
