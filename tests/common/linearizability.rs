//! A linearizability checker for one compare-and-swap register, after Wing & Gong with
//! Lowe's memoisation (the algorithm Porcupine implements): it searches for an order of the
//! operations that respects real time (an operation that returned before another was invoked
//! comes first) and that a sequential register would have produced, backtracking when a
//! return is reached whose call could not be placed. It trusts nothing the server says about
//! order — revisions are only the values versions are compared by.

use std::collections::HashSet;
use std::time::Instant;

/// The register: a version and the value written with it.
pub type State = (u64, u64);

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A read that returned this version and value.
    Read(State),
    /// A swap from version `expected` that succeeded, writing `value` as version `new`.
    Swapped { expected: u64, new: u64, value: u64 },
    /// A swap from version `expected` that was refused (the version was another).
    Refused { expected: u64 },
}

/// One completed operation.
#[derive(Debug, Clone)]
pub struct Operation {
    pub invoked: Instant,
    pub returned: Instant,
    pub action: Action,
}

/// The state after `action` from `state`, if a sequential register allows it.
fn step(state: State, action: &Action) -> Option<State> {
    match *action {
        Action::Read(seen) => (seen == state).then_some(state),
        Action::Swapped {
            expected,
            new,
            value,
        } => (state.0 == expected).then_some((new, value)),
        Action::Refused { expected } => (state.0 != expected).then_some(state),
    }
}

/// Whether `ops` on a register starting at `initial` are linearizable.
pub fn check(initial: State, ops: &[Operation]) -> bool {
    // Events: each operation's call and return, by time (calls first on a tie, which only
    // allows more orders).
    #[derive(Clone, Copy)]
    struct Entry {
        op: usize,
        is_call: bool,
        prev: usize,
        next: usize,
    }
    let mut events: Vec<(Instant, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        events.push((op.invoked, true, i));
        events.push((op.returned, false, i));
    }
    events.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    // A doubly linked list over the events with a sentinel head at index 0.
    let n = events.len();
    let mut list: Vec<Entry> = Vec::with_capacity(n + 1);
    list.push(Entry {
        op: usize::MAX,
        is_call: false,
        prev: usize::MAX,
        next: if n > 0 { 1 } else { usize::MAX },
    });
    let mut call_at = vec![0usize; ops.len()];
    let mut return_at = vec![0usize; ops.len()];
    for (k, &(_, is_call, op)) in events.iter().enumerate() {
        let at = k + 1;
        list.push(Entry {
            op,
            is_call,
            prev: at - 1,
            next: if at < n { at + 1 } else { usize::MAX },
        });
        if is_call {
            call_at[op] = at;
        } else {
            return_at[op] = at;
        }
    }
    let unlink = |list: &mut Vec<Entry>, at: usize| {
        let (p, nx) = (list[at].prev, list[at].next);
        list[p].next = nx;
        if nx != usize::MAX {
            list[nx].prev = p;
        }
    };
    let relink = |list: &mut Vec<Entry>, at: usize| {
        let (p, nx) = (list[at].prev, list[at].next);
        list[p].next = at;
        if nx != usize::MAX {
            list[nx].prev = at;
        }
    };
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state = initial;
    let mut entry = list[0].next;
    while list[0].next != usize::MAX {
        if entry == usize::MAX {
            return false; // cannot happen: the last entry is a return
        }
        let e = list[entry];
        if e.is_call {
            if let Some(next_state) = step(state, &ops[e.op].action) {
                linearized[e.op / 64] |= 1 << (e.op % 64);
                if seen.insert((linearized.clone(), next_state)) {
                    stack.push((e.op, state));
                    state = next_state;
                    // Lift the operation out: its call and its return.
                    unlink(&mut list, call_at[e.op]);
                    unlink(&mut list, return_at[e.op]);
                    entry = list[0].next;
                    continue;
                }
                linearized[e.op / 64] &= !(1 << (e.op % 64));
            }
            entry = e.next;
        } else {
            // A return whose call is still in the list: undo the last choice.
            let Some((op, before)) = stack.pop() else {
                return false;
            };
            state = before;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut list, return_at[op]);
            relink(&mut list, call_at[op]);
            entry = list[call_at[op]].next;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn op(start: u64, end: u64, action: Action) -> Operation {
        let t0 = *T0;
        Operation {
            invoked: t0 + Duration::from_millis(start),
            returned: t0 + Duration::from_millis(end),
            action,
        }
    }

    static T0: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

    #[test]
    fn concurrent_swaps_and_reads_linearize() {
        // Two overlapping swaps from version 1: one wins (→ 2), the other is refused; a read
        // overlapping both may see either version.
        let ops = [
            op(
                0,
                10,
                Action::Swapped {
                    expected: 1,
                    new: 2,
                    value: 20,
                },
            ),
            op(1, 11, Action::Refused { expected: 1 }),
            op(2, 3, Action::Read((1, 10))),
            op(12, 13, Action::Read((2, 20))),
        ];
        assert!(check((1, 10), &ops));
    }

    #[test]
    fn a_stale_read_and_a_lost_update_do_not() {
        // The swap to 2 returned before the read began, yet the read saw version 1.
        let stale = [
            op(
                0,
                1,
                Action::Swapped {
                    expected: 1,
                    new: 2,
                    value: 20,
                },
            ),
            op(2, 3, Action::Read((1, 10))),
        ];
        assert!(!check((1, 10), &stale));
        // Two swaps from version 1 both succeeded: one of them overwrote the other.
        let lost = [
            op(
                0,
                5,
                Action::Swapped {
                    expected: 1,
                    new: 2,
                    value: 20,
                },
            ),
            op(
                1,
                6,
                Action::Swapped {
                    expected: 1,
                    new: 3,
                    value: 30,
                },
            ),
        ];
        assert!(!check((1, 10), &lost));
        // A refusal while the version was the one expected.
        let refused = [op(0, 1, Action::Refused { expected: 1 })];
        assert!(!check((1, 10), &refused));
    }
}
