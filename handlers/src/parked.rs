//! Parked reports sent back to the responses topic, to be applied again
//! once what kept them from applying is fixed
//! (`POST /v1/parked-reports/redrive`).

use std::time::Duration;

use mdc_core::ports::{ConsumerSpec, Queue, QueueError, Topic};

/// How long a parked-reports topic is read before its first record comes:
/// a Kafka consumer gets its partition only once it has joined its group,
/// which takes up to the group's session timeout (30 s by default) while
/// an earlier member is still in it. Once records come, an empty fetch
/// ends the redrive.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// The most reports fetched at once.
const BATCH: usize = 256;

/// A redrive that stopped on a queue error, after moving `moved` reports.
#[derive(Debug, thiserror::Error)]
#[error("{moved} parked reports were sent back before the queue failed: {error}")]
pub struct Unfinished {
    pub moved: usize,
    #[source]
    pub error: QueueError,
}

/// Moves up to `limit` parked reports back onto the responses topic,
/// oldest first, and says how many it moved. When the queue can tell how
/// many are parked, it moves no more than that (a report parked again
/// meanwhile waits for the next redrive) and answers 0 at once when none
/// are. Each is acknowledged on the parked topic only once it is on the
/// responses topic, so none is lost; one moved twice (after a failure in
/// between) is applied twice, which moves nothing the second time.
pub async fn redrive(
    queue: &dyn Queue,
    limit: usize,
    patience: Duration,
) -> Result<usize, Unfinished> {
    let failed = |moved, error| Unfinished { moved, error };
    let parked = queue
        .lag(Topic::ParkedReports)
        .await
        .map_err(|e| failed(0, e))?;
    let limit = match parked {
        Some(0) => return Ok(0),
        Some(parked) => limit.min(usize::try_from(parked).unwrap_or(usize::MAX)),
        None => limit,
    };
    let consumer = queue
        .consumer(Topic::ParkedReports, ConsumerSpec { index: 0, count: 1 })
        .await
        .map_err(|e| failed(0, e))?;
    let started = tokio::time::Instant::now();
    let mut moved = 0;
    let outcome = async {
        while moved < limit {
            let batch = consumer.fetch((limit - moved).min(BATCH)).await?;
            if batch.is_empty() {
                if moved > 0 || started.elapsed() >= patience {
                    break;
                }
                continue;
            }
            for delivery in batch {
                queue
                    .produce(Topic::Responses, &delivery.key, delivery.payload.clone())
                    .await?;
                consumer.ack(&delivery).await?;
                moved += 1;
            }
        }
        Ok(())
    }
    .await;
    // Fetched and not moved: handed out again next time.
    let closed = consumer.close().await;
    outcome.and(closed).map_err(|e| failed(moved, e))?;
    Ok(moved)
}
