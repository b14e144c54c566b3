"""Clinical depth beside the entities: assertion status (present / absent / possible) of each mention
and directed relations between mentions (MODIFY, SUB_PROCEDURE, IDENTICAL, BEFORE, AFTER, CAUSE).

The taggers' layer: models load from self-contained artifacts and run on plain CPU code (numpy),
batched over a list of notes, without Spark. See docs/clinical.md.
"""
