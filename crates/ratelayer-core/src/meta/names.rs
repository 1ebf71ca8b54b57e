//! The names a request's metadata holds (provider, credential fingerprint, model), shared:
//! each thread keeps the few it used last, so a steady stream of requests with the same
//! names allocates none of them.

use std::cell::RefCell;
use std::sync::Arc;

/// Names kept per thread: enough for a few providers, keys and models in turn.
const KEPT: usize = 16;

/// The names a thread used last, the oldest replaced first.
struct Recent {
    names: [Option<Arc<str>>; KEPT],
    /// The slot the next new name takes.
    next: usize,
}

thread_local! {
    static RECENT: RefCell<Recent> = const {
        RefCell::new(Recent {
            names: [const { None }; KEPT],
            next: 0,
        })
    };
}

/// `text` as a shared name: one this thread used lately when equal, else a new one (then
/// kept). `None` when `text` is not UTF-8.
pub(crate) fn name(text: &[u8]) -> Option<Arc<str>> {
    let kept = RECENT
        .try_with(|recent| {
            let recent = recent.try_borrow().ok()?;
            recent
                .names
                .iter()
                .flatten()
                .find(|n| n.as_bytes() == text)
                .cloned()
        })
        .ok()
        .flatten();
    if kept.is_some() {
        return kept;
    }
    let new: Arc<str> = Arc::from(std::str::from_utf8(text).ok()?);
    // Without the thread's names (being torn down, or borrowed): not kept.
    let _ = RECENT.try_with(|recent| {
        if let Ok(mut recent) = recent.try_borrow_mut() {
            let at = recent.next;
            recent.names[at] = Some(new.clone());
            recent.next = (at + 1) % KEPT;
        }
    });
    Some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_names_share_one_allocation_and_the_oldest_is_replaced() {
        let a = name(b"gpt-4o-mini").unwrap();
        let b = name(b"gpt-4o-mini").unwrap();
        assert_eq!(&*a, "gpt-4o-mini");
        assert!(Arc::ptr_eq(&a, &b));
        for i in 0..KEPT {
            name(format!("other-{i}").as_bytes()).unwrap();
        }
        let c = name(b"gpt-4o-mini").unwrap();
        assert_eq!(c, a);
        assert!(!Arc::ptr_eq(&a, &c), "forgotten after {KEPT} newer names");
    }

    #[test]
    fn text_that_is_not_utf8_is_no_name() {
        assert_eq!(name(b"\xff"), None);
        assert_eq!(name("\u{e9}".as_bytes()).as_deref(), Some("\u{e9}"));
    }
}
