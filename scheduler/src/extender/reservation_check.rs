//! Reservations the pod watch leaves unconfirmed: asked about at the API server, and as a
//! last resort expired.
//!
//! The watch normally confirms a reservation within milliseconds of the bind. It cannot when
//! it has fallen behind: after a 410 (an API server restart, say) it lists again, and a pod
//! bound and deleted in between is neither in an event nor in the list, so its reservation
//! would hold devices until the TTL. A GET settles it: a pod gone releases its devices, a
//! bound one is recorded as the API server shows it, one not bound yet keeps them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::api_client::PodRef;
use super::cluster_state::Settled;
use super::reflectors::pod_record;
use super::service::Extender;

/// How often unconfirmed reservations are looked at.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// A reservation the watch has not confirmed this long after the bind is asked about: far
/// more than a bind and its watch event take, so a healthy watch never causes a GET.
pub const CHECK_AFTER: Duration = Duration::from_secs(10);

/// Most reservations asked about per round, oldest first: a watch far behind during a burst
/// leaves many unconfirmed, and the API server it lags behind is then busy already.
pub const MAX_CHECKS_PER_ROUND: usize = 64;

/// Checks and expires unconfirmed reservations, every few seconds; never returns.
pub async fn run(ext: Arc<Extender>) {
    let ttl = Duration::from_secs(ext.config().reservation_ttl_seconds);
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    loop {
        tick.tick().await;
        check_unconfirmed(&ext, Instant::now()).await;
        let expired = ext.state_mut().expire_reservations(Instant::now(), ttl);
        if expired > 0 {
            ext.metrics()
                .set_reservations(ext.state().reservation_count());
        }
    }
}

/// Asks the API server about the reservations made more than [`CHECK_AFTER`] before `now`
/// and not yet confirmed (the [`MAX_CHECKS_PER_ROUND`] oldest), and settles them; returns
/// what was done to each, by pod UID.
pub async fn check_unconfirmed(ext: &Extender, now: Instant) -> Vec<(String, Settled)> {
    let (generation, mut unconfirmed) = {
        let state = ext.state();
        (
            state.pod_list_generation(),
            state.unconfirmed_reservations(now, CHECK_AFTER),
        )
    };
    unconfirmed.sort_by_key(|(uid, r)| (r.created, uid.clone()));
    unconfirmed.truncate(MAX_CHECKS_PER_ROUND);
    let mut done = Vec::with_capacity(unconfirmed.len());
    for (uid, reservation) in unconfirmed {
        let pod = PodRef {
            namespace: reservation.namespace.clone(),
            name: reservation.name.clone(),
            uid: uid.clone(),
        };
        let found = match ext.binder().get_pod(&pod).await {
            Ok(object) if object.metadata.uid.as_deref() == Some(uid.as_str()) => {
                // No record: the pod finished, and holds nothing.
                pod_record(ext, &object).map(|(_, record)| record)
            }
            // A namesake: ours was deleted.
            Ok(_) => None,
            Err(error) if error.is_not_found() => None,
            Err(error) => {
                tracing::warn!(pod = %pod.name, namespace = %pod.namespace, %error,
                    "could not check an unconfirmed reservation; trying again later");
                ext.metrics().reservation_checked("api_error");
                continue;
            }
        };
        let settled =
            ext.state_mut()
                .settle_reservation(&uid, reservation.created, generation, found);
        let label = match settled {
            Settled::Released => "released",
            Settled::Recorded => "recorded",
            Settled::Kept => "kept",
            Settled::Stale => "stale",
        };
        tracing::info!(pod = %pod.name, namespace = %pod.namespace, node = %reservation.node,
            outcome = label, age_s = now.saturating_duration_since(reservation.created).as_secs(),
            "checked a reservation the watch has not confirmed");
        ext.metrics().reservation_checked(label);
        done.push((uid, settled));
    }
    if !done.is_empty() {
        ext.metrics()
            .set_reservations(ext.state().reservation_count());
    }
    done
}
