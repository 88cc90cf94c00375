"""The peer link: records and confirmations between regions over HTTP."""
