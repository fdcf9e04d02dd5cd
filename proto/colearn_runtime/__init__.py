"""What the learner and the backend both run, beside the contract: gRPC channel and server options,
transport security on both ends (TLS, mTLS, bearer tokens), the allocator setting for processes that
stream weights, and the command-line helpers every ``colearn-*`` command shares.

It sits on the contract (``colearn_contract``) and below both sides; it imports no ML framework.
"""
