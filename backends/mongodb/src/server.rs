//! What MDC needs of the MongoDB server itself, checked at start-up.

use mdc_core::ports::StoreError;
use mongodb::bson::doc;

use crate::unavailable;

/// Refuses a server that cannot take transactions: a message and its
/// caller's idempotency key are written in one. MongoDB takes them on a
/// replica set member (its `hello` names the set) or through `mongos`
/// (`msg: "isdbgrid"`), never on a standalone server, where every
/// submission with a key would fail. A server that knows no `hello`
/// (MongoDB before 4.4.2, some compatible services) is asked `isMaster`,
/// which answers alike; one that answers neither is let through with a
/// warning rather than refused on a guess.
pub(crate) async fn takes_transactions(database: &mongodb::Database) -> Result<(), StoreError> {
    let reply = match database.run_command(doc! { "hello": 1 }).await {
        Err(e) if unknown_command(&e) => database.run_command(doc! { "isMaster": 1 }).await,
        reply => reply,
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(e) if unknown_command(&e) => {
            tracing::warn!(error = %e, "MongoDB answers neither hello nor isMaster: cannot tell whether it takes transactions, which submissions with an idempotency key need");
            return Ok(());
        }
        Err(e) => return Err(unavailable(e)),
    };
    let in_a_set = reply.get_str("setName").is_ok_and(|name| !name.is_empty());
    let mongos = reply.get_str("msg") == Ok("isdbgrid");
    if in_a_set || mongos {
        return Ok(());
    }
    const WHY: &str = "MDC writes a message and its idempotency key in one transaction, which MongoDB takes only on a replica set (one node will do) or a sharded cluster";
    let error = if reply.get_bool("isreplicaset") == Ok(true) {
        format!("the MongoDB server's replica set is not initiated (run rs.initiate() once): {WHY}")
    } else {
        format!("the MongoDB server is standalone (start mongod with --replSet and run rs.initiate() once): {WHY}")
    };
    Err(StoreError::Other(error.into()))
}

/// The server does not know the command (CommandNotFound, or
/// CommandNotSupported on some compatible services).
fn unknown_command(error: &mongodb::error::Error) -> bool {
    matches!(
        error.kind.as_ref(),
        mongodb::error::ErrorKind::Command(e) if e.code == 59 || e.code == 115
    )
}
