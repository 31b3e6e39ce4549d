"""A Flower app that trains the digits MLP with secfl's encrypted aggregation."""
