"""The quickstart demo: in-memory example participants and ``txc demo``."""
