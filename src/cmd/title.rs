//! Process titles: `ps` shows which component (and which node) a `skiff` process is, so an
//! operator with five kubelets on one host can tell them apart.
//!
//! Two parts: the kernel's short name (`comm`, 15 bytes, what `top` and `ps -o comm` show),
//! set with `prctl(PR_SET_NAME)`; and `argv[0]` (what `ps aux` shows), which can only be
//! changed safely by re-executing the same binary with a new `argv[0]` — same pid, same open
//! descriptors, same arguments. `SKIFF_TITLE` marks the re-executed process so it happens once.

use std::ffi::CString;
use std::os::unix::process::CommandExt;

/// Marks a process that already carries its title.
const MARK: &str = crate::config::env::TITLE;

/// Gives this process the title `<component>: <details…>`; re-executes at most once. Returns
/// only if the title is set or cannot be (the component then runs under its old title).
pub fn set(component: &str, details: &[&str]) {
    let comm: String = component.chars().take(15).collect();
    if let Ok(c) = CString::new(comm) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
    let title = if details.is_empty() {
        component.to_string()
    } else {
        format!("{component}: {}", details.join(" "))
    };
    if std::env::var(MARK).is_ok_and(|t| t == title)
        || std::env::var_os(crate::config::env::NO_TITLE).is_some()
    {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = std::process::Command::new(exe)
        .arg0(&title)
        .args(std::env::args_os().skip(1))
        .env(MARK, &title)
        .exec();
    // exec returns only when it failed; carry on under the old title.
    eprintln!("skiff: could not set the process title: {err}");
}
