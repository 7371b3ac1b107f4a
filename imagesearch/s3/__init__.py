"""Indexing what lives in S3: events, backfills and reads of originals.

* :mod:`~imagesearch.s3.events`: parses S3 notifications (direct, SNS-wrapped, EventBridge) into
  :class:`~imagesearch.s3.events.ObjectEvent` s.
* :mod:`~imagesearch.s3.sns`: verifies the signatures of SNS envelopes that arrive over HTTP.
* :mod:`~imagesearch.s3.event_log`: the last event applied per object (memory or Redis), so late
  and repeated deliveries change nothing.
* :mod:`~imagesearch.s3.ingest`: applies events to the index, one record per object key.
* :mod:`~imagesearch.s3.backfill` and :mod:`~imagesearch.s3.reconcile`: list an S3 prefix or a
  local folder, enqueue what is missing, remove what is orphaned.
* :mod:`~imagesearch.s3.sources`: reads an original from an ``s3://`` URI or a blob key.
* :mod:`~imagesearch.s3.client`: the one boto3 client factory and the one error classifier.

Nothing is re-exported here, so importing one module loads only what it needs.
"""
