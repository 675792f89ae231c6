//! freshet-storage
