"""The one bridge from the Qt-free engine to Qt threads and signals."""
