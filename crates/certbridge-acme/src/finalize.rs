//! finalize (to be written).
