//! A FIFO async mutex for one core. The log uses it to serialise appends and disk rounds
//! without holding a `RefCell` borrow across an `.await`. `!Send`, per core.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Ticket-based async mutex (no data inside; it guards a critical section). Per core.
#[derive(Debug, Default)]
pub(crate) struct LocalMutex {
    next_ticket: Cell<u64>,
    serving: Cell<u64>,
    abandoned: RefCell<BTreeSet<u64>>,
    wakers: RefCell<Vec<Waker>>,
}

impl LocalMutex {
    pub(crate) fn lock(&self) -> LockFuture<'_> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        LockFuture {
            mutex: self,
            ticket,
            done: false,
        }
    }

    fn advance(&self) {
        let mut s = self.serving.get() + 1;
        {
            let mut ab = self.abandoned.borrow_mut();
            while ab.remove(&s) {
                s += 1;
            }
        }
        self.serving.set(s);
        let wakers = std::mem::take(&mut *self.wakers.borrow_mut());
        for w in wakers {
            w.wake();
        }
    }
}

pub(crate) struct LockFuture<'a> {
    mutex: &'a LocalMutex,
    ticket: u64,
    done: bool,
}

impl<'a> Future for LockFuture<'a> {
    type Output = LocalGuard<'a>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LocalGuard<'a>> {
        if self.mutex.serving.get() == self.ticket {
            self.done = true;
            Poll::Ready(LocalGuard { mutex: self.mutex })
        } else {
            self.mutex.wakers.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
    }
}

impl Drop for LockFuture<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.mutex.serving.get() == self.ticket {
            // Granted but never taken: pass it on.
            self.mutex.advance();
        } else {
            self.mutex.abandoned.borrow_mut().insert(self.ticket);
        }
    }
}

pub(crate) struct LocalGuard<'a> {
    mutex: &'a LocalMutex,
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        self.mutex.advance();
    }
}
