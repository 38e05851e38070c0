-- Bundles that failed a rule are counted per relay, peer or file they came from and per
-- reason, as damaged ones are per source (0010), not kept one row each: a source sending
-- junk no longer grows the store (hearth.validity.intake keeps at most a few dozen reasons a
-- source). The rejections table keeps only the notes for members and admins
-- (retraction.notice).
CREATE TABLE rejected_arrivals (
    source  TEXT NOT NULL,
    reason  TEXT NOT NULL,
    count   INTEGER NOT NULL,
    last_at INTEGER NOT NULL,
    PRIMARY KEY (source, reason)
);
INSERT INTO rejected_arrivals(source, reason, count, last_at)
    SELECT source, substr(reason, 1, 200), COUNT(*), MAX(at)
    FROM rejections
    WHERE source NOT IN ('removal', 'equivocation', 'second-claim')
    GROUP BY source, substr(reason, 1, 200);
DELETE FROM rejections WHERE source NOT IN ('removal', 'equivocation', 'second-claim');
