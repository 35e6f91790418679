global using Xunit;
global using Marketplace.Testing;
