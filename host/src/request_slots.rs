//! Connection slots of the host's two request listeners, the metrics port and the admin
//! socket: at most N connections at once, and when all are taken, a newcomer takes the slot
//! of the connection that has waited longest without completing its request.
//!
//! Why: both serve one short request per connection, so a connection that has not sent its
//! request yet costs a slot and gives nothing. Refusing newcomers at the cap (metrics) or
//! leaving them in the listen backlog (admin) let a handful of idle or trickling connections
//! blind monitoring and lock out the operator: 24 of them left 0 of 34 scrapes answered in
//! 17 s, 300 made `host ctl stats` time out (issue 23). Evicting the oldest waiting one
//! instead, a crowd holds a slot against a real client only by opening N new connections
//! between that client's connect and its request, which on loopback arrive together.
//! A connection whose request is complete is never evicted: the listener's per-request
//! deadline bounds it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::task::JoinHandle;

/// Given to a connection's task: [`RequestStarted::mark`] once its request is complete, after
/// which the connection keeps its slot until it ends.
#[derive(Debug, Clone)]
pub struct RequestStarted(Arc<AtomicBool>);

impl RequestStarted {
    /// The request is complete and being served.
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How [`RequestSlots::spawn`] placed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A slot was free.
    Free,
    /// The connection that had waited longest for its request was closed to make room.
    Evicted,
    /// Every slot serves a request: the connection was dropped (closed) unserved.
    Full,
}

#[derive(Debug)]
struct Slot {
    task: JoinHandle<()>,
    started: RequestStarted,
}

/// At most `max` connection tasks, oldest first; owned by one accept loop.
#[derive(Debug)]
pub struct RequestSlots {
    max: usize,
    live: VecDeque<Slot>,
}

impl RequestSlots {
    /// Room for `max` (at least 1) connections.
    pub fn new(max: usize) -> Self {
        RequestSlots {
            max: max.max(1),
            live: VecDeque::with_capacity(max),
        }
    }

    /// Connections holding a slot now.
    pub fn len(&mut self) -> usize {
        self.reap();
        self.live.len()
    }

    /// True when no connection holds a slot.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    fn reap(&mut self) {
        self.live.retain(|s| !s.task.is_finished());
    }

    /// Spawns `serve` for a new connection in a free slot, or in the slot of the oldest
    /// connection still waiting for its request (that one's task is aborted, which closes
    /// it). When every slot serves a request, `serve` is dropped without running.
    pub fn spawn<F>(&mut self, serve: impl FnOnce(RequestStarted) -> F) -> Admission
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.reap();
        let mut admission = Admission::Free;
        if self.live.len() >= self.max {
            match self.live.iter().position(|s| !s.started.is_marked()) {
                Some(i) => {
                    if let Some(old) = self.live.remove(i) {
                        old.task.abort();
                    }
                    admission = Admission::Evicted;
                }
                None => return Admission::Full,
            }
        }
        let started = RequestStarted(Arc::new(AtomicBool::new(false)));
        let task = tokio::spawn(serve(started.clone()));
        self.live.push_back(Slot { task, started });
        admission
    }

    /// Returns once [`RequestSlots::spawn`] would not answer [`Admission::Full`]: at once
    /// unless every slot serves a request, else when the first of them ends.
    pub async fn room(&mut self) {
        loop {
            self.reap();
            if self.live.len() < self.max || self.live.iter().any(|s| !s.started.is_marked()) {
                return;
            }
            // Until any of them ends.
            std::future::poll_fn(|cx| {
                for s in &mut self.live {
                    if Pin::new(&mut s.task).poll(cx).is_ready() {
                        return Poll::Ready(());
                    }
                }
                Poll::Pending
            })
            .await;
        }
    }

    /// Waits up to `within` for every connection to end, then aborts what is left; false if
    /// some had to be aborted.
    pub async fn finish(mut self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut all_ended = true;
        // Each handle is awaited to its end once (a finished one must not be polled again).
        for s in &mut self.live {
            if tokio::time::timeout_at(deadline, &mut s.task)
                .await
                .is_err()
            {
                s.task.abort();
                let _ = (&mut s.task).await;
                all_ended = false;
            }
        }
        all_ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// A connection task that marks its request complete when told to, and reports when it
    /// is dropped (closed).
    fn conn(slots: &mut RequestSlots) -> (Admission, oneshot::Sender<()>, oneshot::Receiver<()>) {
        let (start_tx, start_rx) = oneshot::channel::<()>();
        let (closed_tx, closed_rx) = oneshot::channel::<()>();
        let admission = slots.spawn(move |started| async move {
            let _closed = closed_tx; // dropped with the task
            if start_rx.await.is_ok() {
                started.mark();
            }
            std::future::pending::<()>().await;
        });
        (admission, start_tx, closed_rx)
    }

    #[tokio::test]
    async fn a_newcomer_evicts_the_oldest_connection_still_waiting_for_its_request() {
        let mut slots = RequestSlots::new(3);
        let (a, start_a, mut closed_a) = conn(&mut slots);
        let (b, _start_b, closed_b) = conn(&mut slots);
        let (c, _start_c, mut closed_c) = conn(&mut slots);
        assert_eq!([a, b, c], [Admission::Free; 3]);
        // `a` completes its request: it keeps its slot.
        start_a.send(()).unwrap();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;

        let (d, _start_d, _closed_d) = conn(&mut slots);
        assert_eq!(d, Admission::Evicted);
        assert!(closed_b.await.is_err(), "b, the oldest waiting, is closed");
        assert!(
            closed_a
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        assert!(
            closed_c
                .try_recv()
                .is_err_and(|e| e == oneshot::error::TryRecvError::Empty)
        );
        assert_eq!(slots.len(), 3);
    }

    #[tokio::test]
    async fn when_every_slot_serves_a_request_a_newcomer_is_dropped_and_room_waits() {
        let mut slots = RequestSlots::new(2);
        let (_, start_a, _closed_a) = conn(&mut slots);
        let (_, start_b, _closed_b) = conn(&mut slots);
        start_a.send(()).unwrap();
        start_b.send(()).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        let ran = Arc::new(AtomicBool::new(false));
        let r = ran.clone();
        let admission = slots.spawn(move |_| async move { r.store(true, Ordering::Relaxed) });
        assert_eq!(admission, Admission::Full);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            !ran.load(Ordering::Relaxed),
            "a dropped connection is not served"
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(50), slots.room())
                .await
                .is_err(),
            "no room while both serve"
        );
        assert!(!slots.finish(Duration::from_millis(10)).await, "aborted");
    }

    #[tokio::test]
    async fn finish_waits_for_the_connections_then_aborts_the_rest() {
        let mut slots = RequestSlots::new(4);
        slots.spawn(|_| async { tokio::time::sleep(Duration::from_millis(20)).await });
        assert!(
            slots.finish(Duration::from_secs(5)).await,
            "all ended in time"
        );

        let mut slots = RequestSlots::new(4);
        slots.spawn(|_| async { tokio::time::sleep(Duration::from_millis(20)).await });
        let (_, _start, closed) = conn(&mut slots);
        assert!(!slots.finish(Duration::from_millis(200)).await);
        assert!(closed.await.is_err(), "the one still running was aborted");
    }
}
