//! Test hook: makes the process die at the n-th [`super::step`] of this
//! thread, as SIGKILL would (`_exit`: no unwinding, no destructor).

use std::cell::Cell;

/// Exit status of a process that died at the chosen step.
pub const DIED: i32 = 77;

thread_local! {
    static COUNTDOWN: Cell<u64> = const { Cell::new(0) };
}

/// From now on, die at the `n`-th step (0: never).
pub fn arm(n: u64) {
    COUNTDOWN.with(|c| c.set(n));
}

pub fn point() {
    COUNTDOWN.with(|c| match c.get() {
        0 => {}
        1 => {
            // SAFETY: _exit ends the process at once; nothing is shared
            // with the parent but the test's shared mapping.
            unsafe { libc::_exit(DIED) }
        }
        n => c.set(n - 1),
    });
}
