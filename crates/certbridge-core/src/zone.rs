//! Zone-file rendering (filled in by the zone_render work).
