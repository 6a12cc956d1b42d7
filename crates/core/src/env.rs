//! Injected clock and randomness, so tests and simulations control time and ids.

use std::sync::Arc;
use std::sync::Mutex;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Wall-clock time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// Source of fresh ids (snapshot ids, file-name UUIDs).
pub trait Ids: Send + Sync + 'static {
    /// A random, positive snapshot id.
    fn snapshot_id(&self) -> i64;
    /// A random UUID (v4) for unique names.
    fn uuid(&self) -> uuid::Uuid;
    /// 32 random bytes for a credential; must be unpredictable outside tests.
    fn secret(&self) -> [u8; 32];
}

/// The system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// Ids from a seedable generator.
#[derive(Debug)]
pub struct RandomIds(Mutex<StdRng>);

impl RandomIds {
    pub fn from_entropy() -> Self {
        Self(Mutex::new(StdRng::from_entropy()))
    }
    pub fn seeded(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl Ids for RandomIds {
    fn snapshot_id(&self) -> i64 {
        self.0.lock().expect("rng poisoned").gen_range(1..i64::MAX)
    }
    fn uuid(&self) -> uuid::Uuid {
        let bytes: [u8; 16] = self.0.lock().expect("rng poisoned").r#gen();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
    fn secret(&self) -> [u8; 32] {
        self.0.lock().expect("rng poisoned").r#gen()
    }
}

/// The clock and id source a catalog runs with.
#[derive(Clone)]
pub struct Env {
    pub clock: Arc<dyn Clock>,
    pub ids: Arc<dyn Ids>,
}

impl Default for Env {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            ids: Arc::new(RandomIds::from_entropy()),
        }
    }
}
