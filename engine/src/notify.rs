//! A single-threaded "something changed" signal (per core, `!Send`).
//!
//! `Notify` keeps a generation counter; `wait(seen)` resolves once the generation differs from
//! `seen`. Used for high-watermark advances (fetch waiters, acks=all) and flusher wakeups.
//! A waiter that is dropped before it fired (e.g. a long poll that timed out) removes its
//! registration, so idle partitions do not accumulate wakers.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Per-core change signal. Not `Send`: lives inside per-core objects.
#[derive(Debug, Default)]
pub struct Notify {
    generation: Cell<u64>,
    next_waiter_id: Cell<u64>,
    waiters: RefCell<Vec<(u64, Waker)>>,
}

impl Notify {
    pub fn new() -> Self {
        Self::default()
    }

    /// Current generation; pass it to `wait` to wait for the next change.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Bumps the generation and wakes every waiter.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, w) in waiters {
            w.wake();
        }
    }

    /// Resolves when the generation is no longer `seen`.
    pub fn wait(&self, seen: u64) -> Wait<'_> {
        Wait {
            notify: self,
            seen,
            id: None,
        }
    }

    /// Registered waiters (for tests and metrics).
    pub fn waiter_count(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// Future returned by `Notify::wait`.
pub struct Wait<'a> {
    notify: &'a Notify,
    seen: u64,
    id: Option<u64>,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.seen {
            self.id = None; // notify_all already dropped our registration
            return Poll::Ready(());
        }
        let notify = self.notify;
        let mut waiters = notify.waiters.borrow_mut();
        match self.id {
            Some(id) => match waiters.iter_mut().find(|(i, _)| *i == id) {
                Some((_, w)) => {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                }
                None => waiters.push((id, cx.waker().clone())),
            },
            None => {
                let id = notify.next_waiter_id.get();
                notify.next_waiter_id.set(id + 1);
                waiters.push((id, cx.waker().clone()));
                drop(waiters);
                self.id = Some(id);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.notify.waiters.borrow_mut().retain(|(i, _)| *i != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiter_wakes_only_after_a_notification() {
        let n = Notify::new();
        let seen = n.generation();
        let mut fut = Box::pin(n.wait(seen));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert_eq!(n.waiter_count(), 1);
        n.notify_all();
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn an_abandoned_waiter_leaves_no_registration_behind() {
        let n = Notify::new();
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..100 {
            // A long poll that times out drops its wait without a notification.
            let mut fut = Box::pin(n.wait(n.generation()));
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(n.waiter_count(), 0);
    }
}
