"""What an app includes: the capabilities that put Canopy's core on the web (jobs API,
topics API and ``/ws``, dashboard) and the reference services (demo, orders, support,
ticker), each built on the same public contract as a user's own."""
