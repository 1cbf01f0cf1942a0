"""The base every other module builds on: file I/O and class-name metadata, `.keras` files,
output folders, argument checks, and what the backend can do (with the fast-path switch).
Nothing here imports from the rest of the package."""
