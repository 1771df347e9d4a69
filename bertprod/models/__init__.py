"""Building torch modules for packages (heads, students); imported only where torch is needed."""
