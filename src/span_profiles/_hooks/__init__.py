"""Runtime hooks, one module per runtime, each imported only when ``instrument()`` installs it.

Every hook keeps the calling thread's labels equal to the labels of the OTel context that is about
to run there, and switches itself off (logged once) if it ever fails.
"""
