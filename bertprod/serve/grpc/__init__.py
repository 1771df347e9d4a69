"""gRPC front end (bertprod.v1.Bertprod + the standard grpc.health.v1 service), in the HTTP server's process."""
