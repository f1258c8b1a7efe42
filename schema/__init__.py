"""JSON Schemas of the kucero policy, one file per apiVersion (packaged as reconciler.schema)."""
