//! Single-threaded synchronisation helpers for the client: a oneshot channel and a
//! wake-all notifier. Owned by one glommio executor (per-core, `!Send`): they use `Rc` and
//! `RefCell` and never cross threads.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

struct OneshotState<T> {
    value: Option<T>,
    waker: Option<Waker>,
    sender_gone: bool,
}

/// Sending half of a oneshot channel (per-core, `!Send`).
pub struct OneshotSender<T> {
    state: Rc<RefCell<OneshotState<T>>>,
}

/// Receiving half of a oneshot channel; resolves to `None` when the sender was dropped
/// without sending (per-core, `!Send`).
pub struct OneshotReceiver<T> {
    state: Rc<RefCell<OneshotState<T>>>,
}

/// Creates a connected oneshot pair.
pub fn oneshot<T>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let state = Rc::new(RefCell::new(OneshotState {
        value: None,
        waker: None,
        sender_gone: false,
    }));
    (
        OneshotSender {
            state: state.clone(),
        },
        OneshotReceiver { state },
    )
}

impl<T> OneshotSender<T> {
    /// Delivers `value`; the receiver (if still alive) wakes up.
    pub fn send(self, value: T) {
        let waker = {
            let mut st = self.state.borrow_mut();
            st.value = Some(value);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.state.borrow_mut();
            st.sender_gone = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Future for OneshotReceiver<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut st = self.state.borrow_mut();
        if let Some(v) = st.value.take() {
            return Poll::Ready(Some(v));
        }
        if st.sender_gone {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Wake-all notifier: `notified()` resolves after the next `notify_all()` (per-core, `!Send`).
#[derive(Clone, Default)]
pub struct Notify {
    inner: Rc<RefCell<NotifyState>>,
}

#[derive(Default)]
struct NotifyState {
    generation: u64,
    wakers: Vec<Waker>,
}

impl Notify {
    /// Wakes every task currently waiting in `notified()`.
    pub fn notify_all(&self) {
        let wakers = {
            let mut st = self.inner.borrow_mut();
            st.generation += 1;
            std::mem::take(&mut st.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// A future that resolves at the next `notify_all()`.
    pub fn notified(&self) -> Notified {
        Notified {
            inner: self.inner.clone(),
            generation: self.inner.borrow().generation,
        }
    }
}

/// Future returned by [`Notify::notified`].
pub struct Notified {
    inner: Rc<RefCell<NotifyState>>,
    generation: u64,
}

impl Future for Notified {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.inner.borrow_mut();
        if st.generation != self.generation {
            return Poll::Ready(());
        }
        st.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

/// Runs `fut` but gives up after `timeout`, returning `None`.
pub async fn with_timeout<F: Future>(timeout: std::time::Duration, fut: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(timeout).await;
        None
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oneshot_delivers_value_and_reports_dropped_sender() {
        glommio::LocalExecutor::default().run(async {
            let (tx, rx) = oneshot::<u32>();
            tx.send(7);
            assert_eq!(rx.await, Some(7));
            let (tx, rx) = oneshot::<u32>();
            drop(tx);
            assert_eq!(rx.await, None);
        });
    }

    #[test]
    fn notify_wakes_waiters_registered_before_the_notification() {
        glommio::LocalExecutor::default().run(async {
            let n = Notify::default();
            let waiter = n.notified();
            let n2 = n.clone();
            glommio::spawn_local(async move { n2.notify_all() }).detach();
            waiter.await;
        });
    }
}
