package gateway

// InlineSubscribers counts the inline subscriptions (the gateway's own,
// such as an actuator's command topic) that a message on topic reaches,
// for the external tests.
func InlineSubscribers(g *Gateway, topic string) int {
	return len(g.broker.Server().Topics.Subscribers(topic).InlineSubscriptions)
}
