//! request (to be written).
