-- Bundles that arrived damaged (SECURITY.md R16: format, admission signature or decryption
-- failed), counted per relay, peer or file they came from: damage is not a verdict on the
-- bundle, so none is kept, only how often each source sent one (`hearth status`, `doctor`).
CREATE TABLE damaged_arrivals (
    source  TEXT PRIMARY KEY,
    count   INTEGER NOT NULL,
    last_at INTEGER NOT NULL
);
