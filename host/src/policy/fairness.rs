//! Fair shares of the policy workers between tenants of a shared server. A tenant always
//! gets its share of calls at once (half the CPUs); beyond that it may use idle capacity (up
//! to one call per CPU in all), so a lone tenant still uses every core. A tenant's calls over
//! that wait for its own calls to end, never for another tenant's: a hostile tenant (endless
//! loops running to their deadline, a flood of evaluations) holds at most the CPUs' worth of
//! calls, and another tenant's call always starts at once, within its own share.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::PolicyError;

/// Calls in flight per tenant, each tenant bounded by the same share.
pub struct TenantShares {
    share: usize,
    /// Calls of all tenants together beyond which a tenant gets no more than its share.
    capacity: usize,
    calls: Mutex<HashMap<String, usize>>,
    freed: Condvar,
}

impl TenantShares {
    /// Each tenant gets `share` calls at once (at least 1), and more while fewer than
    /// `capacity` calls run in all.
    pub fn new(share: usize, capacity: usize) -> Self {
        let share = share.max(1);
        Self {
            share,
            capacity: capacity.max(share),
            calls: Mutex::default(),
            freed: Condvar::new(),
        }
    }

    /// One call per CPU.
    pub fn default_capacity() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// The default share: half the CPUs (at least one), what each tenant is sure to get.
    pub fn default_share() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }

    pub fn share(&self) -> usize {
        self.share
    }

    /// Waits (up to `wait`) until `tenant` is below its share, or every tenant's calls
    /// together are below the capacity; counts this call until the returned guard drops.
    pub fn enter(&self, tenant: &str, wait: Duration) -> Result<Share<'_>, PolicyError> {
        let started = Instant::now();
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let own = calls.get(tenant).copied().unwrap_or(0);
            let all: usize = calls.values().sum();
            if own < self.share || all < self.capacity {
                break;
            }
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(PolicyError::TenantBusy {
                    share: self.share,
                    waited: wait,
                });
            }
            calls = self
                .freed
                .wait_timeout(calls, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *calls.entry(tenant.to_owned()).or_default() += 1;
        Ok(Share {
            shares: self,
            tenant: tenant.to_owned(),
        })
    }

    /// Calls of `tenant` in flight now.
    pub fn in_flight(&self, tenant: &str) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
            .copied()
            .unwrap_or(0)
    }
}

/// One call counted against its tenant's share.
pub struct Share<'a> {
    shares: &'a TenantShares,
    tenant: String,
}

impl Drop for Share<'_> {
    fn drop(&mut self) {
        let mut calls = self.shares.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = calls.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                calls.remove(&self.tenant);
            }
        }
        drop(calls);
        self.shares.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_tenant_uses_idle_capacity_and_another_always_gets_its_share() {
        let shares = TenantShares::new(1, 2);
        let a1 = shares.enter("a", Duration::ZERO).unwrap();
        // Idle capacity: a second call of the same tenant.
        let a2 = shares.enter("a", Duration::ZERO).unwrap();
        // Capacity used: a third waits for a's own calls, and gives up at its deadline.
        assert!(matches!(
            shares.enter("a", Duration::from_millis(20)),
            Err(PolicyError::TenantBusy { share: 1, .. })
        ));
        // Another tenant starts at once, within its share.
        let b = shares.enter("b", Duration::ZERO).unwrap();
        assert_eq!((shares.in_flight("a"), shares.in_flight("b")), (2, 1));
        // b's second call is over its share with the capacity used: it waits too.
        assert!(shares.enter("b", Duration::ZERO).is_err());
        drop(a1);
        // a still holds its share and more; b's second call fits once the total drops.
        assert!(shares.enter("a", Duration::ZERO).is_err());
        let b2 = shares.enter("b", Duration::ZERO);
        assert!(b2.is_err(), "a 1 + b 1 = capacity: b is at its share");
        drop((a2, b));
        assert_eq!(shares.in_flight("a") + shares.in_flight("b"), 0);
    }

    #[test]
    fn a_waiting_call_starts_when_its_tenant_frees_a_call() {
        let shares = std::sync::Arc::new(TenantShares::new(1, 1));
        let held = shares.enter("a", Duration::ZERO).unwrap();
        let waiter = {
            let shares = shares.clone();
            std::thread::spawn(move || shares.enter("a", Duration::from_secs(30)).map(|_| ()).is_ok())
        };
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
