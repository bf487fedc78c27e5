-- pgqd schema version 5: the ready index no longer tries to deduplicate its entries.
--
-- Its keys end in the job id, so no two are ever equal and B-tree deduplication never merges anything; yet each
-- time a leaf page fills, it makes a pass over the page trying to, before the page splits. In a bulk enqueue
-- that pass was 2 % of the server's time. The index keeps its entries and its use by the claim; only future
-- inserts skip the pass. The change takes a SHARE UPDATE EXCLUSIVE lock on the index alone, so enqueues and
-- claims go on while it runs.
ALTER INDEX {schema}."{prefix}jobs_ready_idx" SET (deduplicate_items = off);
