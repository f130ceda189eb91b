//! Kernel error numbers, as the calls we model return them (negated in the kernel).

/// An errno a kernel call returns. `code()` is the positive Linux value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Errno {
    /// Operation not permitted (1).
    #[error("EPERM")]
    Eperm,
    /// No such file or directory (2).
    #[error("ENOENT")]
    Enoent,
    /// I/O error (5).
    #[error("EIO")]
    Eio,
    /// Try again (11).
    #[error("EAGAIN")]
    Eagain,
    /// No such device or address (6).
    #[error("ENXIO")]
    Enxio,
    /// Bad file descriptor (9).
    #[error("EBADF")]
    Ebadf,
    /// Out of memory (12).
    #[error("ENOMEM")]
    Enomem,
    /// Bad address (14).
    #[error("EFAULT")]
    Efault,
    /// Device or resource busy (16).
    #[error("EBUSY")]
    Ebusy,
    /// File exists (17).
    #[error("EEXIST")]
    Eexist,
    /// No such device (19).
    #[error("ENODEV")]
    Enodev,
    /// Invalid argument (22).
    #[error("EINVAL")]
    Einval,
    /// No space left on device (28).
    #[error("ENOSPC")]
    Enospc,
    /// Result out of range (34).
    #[error("ERANGE")]
    Erange,
    /// Inappropriate ioctl for device (25).
    #[error("ENOTTY")]
    Enotty,
    /// File descriptor in bad state (77).
    #[error("EBADFD")]
    Ebadfd,
}

impl Errno {
    /// The positive Linux errno value.
    pub const fn code(self) -> i32 {
        match self {
            Errno::Eperm => 1,
            Errno::Enoent => 2,
            Errno::Eio => 5,
            Errno::Eagain => 11,
            Errno::Enxio => 6,
            Errno::Ebadf => 9,
            Errno::Enomem => 12,
            Errno::Efault => 14,
            Errno::Ebusy => 16,
            Errno::Eexist => 17,
            Errno::Enodev => 19,
            Errno::Einval => 22,
            Errno::Enotty => 25,
            Errno::Enospc => 28,
            Errno::Erange => 34,
            Errno::Ebadfd => 77,
        }
    }

    /// Every errno this model produces.
    pub const ALL: [Errno; 16] = [
        Errno::Eperm,
        Errno::Enoent,
        Errno::Eio,
        Errno::Eagain,
        Errno::Enxio,
        Errno::Ebadf,
        Errno::Enomem,
        Errno::Efault,
        Errno::Ebusy,
        Errno::Eexist,
        Errno::Enodev,
        Errno::Einval,
        Errno::Enotty,
        Errno::Enospc,
        Errno::Erange,
        Errno::Ebadfd,
    ];

    /// Parses a name such as `EBUSY` (what scenario files write).
    pub fn from_name(name: &str) -> Option<Errno> {
        Self::ALL.into_iter().find(|e| e.to_string() == name)
    }

    /// From a positive value (e.g. a raw OPAL status passed through as an errno).
    pub fn from_code(code: i32) -> Option<Errno> {
        Self::ALL.into_iter().find(|e| e.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_linux_values() {
        assert_eq!(Errno::Eperm.code(), 1);
        assert_eq!(Errno::Ebusy.code(), 16);
        assert_eq!(Errno::Enodev.code(), 19);
        assert_eq!(Errno::Einval.code(), 22);
        assert_eq!(Errno::Enotty.code(), 25);
        assert_eq!(Errno::from_name("ENXIO"), Some(Errno::Enxio));
        assert_eq!(Errno::from_code(6), Some(Errno::Enxio));
        assert_eq!(Errno::from_name("EWHAT"), None);
    }
}
